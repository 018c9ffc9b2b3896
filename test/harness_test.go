// Package test drives the real k8s-master binary, built once, the way an
// operator would: as a separate process, through its flags and outputs, with
// kubectl and client-go as outside clients.
package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/k8s-master/k8s-master/internal/testkit"
)

var masterBin string

func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

// setup uses $K8S_MASTER_BIN (what `make test` builds) or builds the binary
// itself with the Makefile's flags, so the Kubernetes packages come from the
// same build cache.
func setup(m *testing.M) (int, error) {
	masterBin = os.Getenv("K8S_MASTER_BIN")
	if masterBin == "" {
		dir, err := os.MkdirTemp("", "k8s-master-bin-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		masterBin = filepath.Join(dir, "k8s-master")
		build := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-o", masterBin, "../cmd/k8s-master")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return 0, fmt.Errorf("build k8s-master: %w", err)
		}
	}
	if _, err := os.Stat(masterBin); err != nil {
		return 0, err
	}
	return m.Run(), nil
}

// ports are the listening ports of one master.
type ports struct {
	API, EtcdClient, EtcdPeer, EtcdMetrics, KCM, Sched, Join int
}

// freePorts asks the kernel for seven distinct unused loopback ports: a
// test master must not depend on a default port being free on the host.
func freePorts(t *testing.T) ports {
	t.Helper()
	ps := testkit.FreePorts(t, 7)
	return ports{ps[0], ps[1], ps[2], ps[3], ps[4], ps[5], ps[6]}
}

func (p ports) flags() []string {
	return []string{
		"--advertise-address=127.0.0.1", "--bind-address=127.0.0.1",
		"--apiserver-port=" + strconv.Itoa(p.API),
		"--etcd-client-port=" + strconv.Itoa(p.EtcdClient),
		"--etcd-peer-port=" + strconv.Itoa(p.EtcdPeer),
		"--etcd-metrics-port=" + strconv.Itoa(p.EtcdMetrics),
		"--controller-manager-port=" + strconv.Itoa(p.KCM),
		"--scheduler-port=" + strconv.Itoa(p.Sched),
		"--join-port=" + strconv.Itoa(p.Join),
	}
}

// syncBuffer is a bytes.Buffer safe for a writing process and a reading test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// master is one running k8s-master process.
type master struct {
	t       *testing.T
	dataDir string
	cmd     *exec.Cmd
	stdout  syncBuffer
	stderr  syncBuffer
	exited  chan struct{}
	exitErr error
}

// startMaster runs `k8s-master VERB --data-dir DIR ARGS...` in the
// background; it is killed at the end of the test if still running.
func startMaster(t *testing.T, verb, dataDir string, args ...string) *master {
	t.Helper()
	return startProcess(t, verb, dataDir, exec.Command(masterBin, append([]string{verb, "--data-dir", dataDir}, args...)...))
}

// startProcess runs cmd (a k8s-master, possibly wrapped) in the background.
func startProcess(t *testing.T, verb, dataDir string, cmd *exec.Cmd) *master {
	t.Helper()
	m := &master{t: t, dataDir: dataDir, exited: make(chan struct{}), cmd: cmd}
	m.cmd.Stdout, m.cmd.Stderr = &m.stdout, &m.stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		m.exitErr = m.cmd.Wait()
		close(m.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-m.exited:
		default:
			m.cmd.Process.Kill()
			<-m.exited
		}
		if t.Failed() {
			t.Logf("%s %s stdout:\n%s\nstderr:\n%s", verb, dataDir, m.stdout.String(), m.stderr.String())
			if log, err := os.ReadFile(filepath.Join(dataDir, "k8s-master.log")); err == nil {
				t.Logf("last lines of the component log:\n%s", tail(string(log), 40))
			}
		}
	})
	return m
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitReady waits for the "ready in" line; it fails the test if the process
// exits first or the timeout passes.
func (m *master) waitReady(timeout time.Duration) {
	m.t.Helper()
	deadline := time.After(timeout)
	for !strings.Contains(m.stdout.String(), "\nready in ") {
		select {
		case <-m.exited:
			m.t.Fatalf("k8s-master exited before it was ready: %v\nstdout:\n%s\nstderr:\n%s", m.exitErr, m.stdout.String(), m.stderr.String())
		case <-deadline:
			m.t.Fatalf("k8s-master not ready after %s\nstdout:\n%s", timeout, m.stdout.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends sig and waits for the exit; it returns how long that took.
func (m *master) stop(sig syscall.Signal, timeout time.Duration) time.Duration {
	m.t.Helper()
	start := time.Now()
	if err := m.cmd.Process.Signal(sig); err != nil {
		m.t.Fatal(err)
	}
	select {
	case <-m.exited:
	case <-time.After(timeout):
		m.cmd.Process.Kill()
		<-m.exited
		m.t.Fatalf("k8s-master did not exit within %s of %s", timeout, sig)
	}
	return time.Since(start)
}

// running tells whether the process has not exited yet.
func (m *master) running() bool {
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

func (m *master) exitCode() int {
	var ee *exec.ExitError
	if errors.As(m.exitErr, &ee) {
		return ee.ExitCode()
	}
	if m.exitErr != nil {
		return -1
	}
	return 0
}

// runCLI runs a k8s-master command that is expected to finish quickly.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, masterBin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("k8s-master %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// kubectl runs the installed kubectl against a data directory's admin
// kubeconfig.
func kubectl(t *testing.T, dataDir, stdin string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed; .ci/run installs it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"--kubeconfig", filepath.Join(dataDir, "admin.kubeconfig")}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func clientset(t *testing.T, dataDir string) *kubernetes.Clientset {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dataDir, "admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// eventually polls cond every 100 ms until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
