package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/k8s-master/k8s-master/test/chaos"
)

// previousRelease is the directory holding the release users upgrade from
// (binary and .deb), built once by scripts/previous-release.sh and kept in
// .cache/releases/.
var previousRelease = sync.OnceValues(func() (string, error) {
	script, err := filepath.Abs("../scripts/previous-release.sh")
	if err != nil {
		return "", err
	}
	var stderr strings.Builder
	cmd := exec.Command(script)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/previous-release.sh: %v\n%s", err, tail(stderr.String(), 30))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return filepath.Abs(filepath.Join("..", lines[len(lines)-1]))
})

func previousReleaseDir(t *testing.T) string {
	t.Helper()
	dir, err := previousRelease()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// stampedBinary links this build with other version stamps, as a release
// on another Kubernetes version would carry them: how the tests make a
// binary two minors newer, or an older one that has the upgrade checks.
func stampedBinary(t *testing.T, release, kube string) string {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(kube, "v"), ".")
	bin := filepath.Join(t.TempDir(), "k8s-master-"+kube)
	ldflags := fmt.Sprintf("-s -w -X github.com/k8s-master/k8s-master/pkg/version.Release=%s"+
		" -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=%s"+
		" -X k8s.io/component-base/version.gitMinor=%s -X k8s.io/component-base/version.gitTreeState=clean",
		release, kube, parts[0], parts[1])
	build := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags", ldflags, "-o", bin, "../cmd/k8s-master")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a binary stamped %s: %v\n%s", kube, err, out)
	}
	return bin
}

// TestUpgrade upgrades a 3-master cluster of the previous release (with a
// VIP) to this build, one master at a time, while a client writes and
// reads through the VIP: no acknowledged write lost, the history
// linearizable, the client's unavailability per master reported and held
// to the upgrade issue's goal. Then every member runs etcd 3.7 and every
// apiserver this build's Kubernetes, and what was written before is still
// there. Last, the starts the upgrade checks must refuse, each leaving the
// master's data directory as it was.
func TestUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several control planes")
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("kubectl is not installed; .ci/run installs it")
	}
	oldBin := filepath.Join(previousReleaseDir(t), "k8s-master")
	oldVersion := strings.Fields(run(t, oldBin, "version"))[1]
	l := newLab(t, 3)
	pollBin := buildTool(t, "pollvip")
	clientBin := buildTool(t, "chaosclient")
	c := &chaosLab{t: t, l: l, ms: map[int]*master{}}
	c.o = startVIPObserver(t, l, 3)
	defer c.o.finish(t)
	c.o.phase("upgrade", holdersAny)

	c.ms[1] = l.startBin(1, oldBin, "init", vipInitFlags...)
	c.ms[1].waitReady(2 * time.Minute)
	token := strings.TrimSpace(readFile(t, filepath.Join(l.dataDir(1), "token")))
	for i := 2; i <= 3; i++ {
		c.ms[i] = l.startBin(i, oldBin, "join", "--token", token)
		c.ms[i].waitReady(4 * time.Minute)
	}
	waitHealthy(t, l, 1)
	for _, m := range l.status(1).Members {
		if m.Versions.Release != oldVersion || !strings.HasPrefix(m.Versions.Kubernetes, "v1.36.") || !strings.HasPrefix(m.Versions.Etcd, "v3.6.") {
			t.Fatalf("before the upgrade %s runs %+v, want %s with Kubernetes 1.36 and etcd 3.6", m.Name, m.Versions, oldVersion)
		}
	}
	c.o.startPoller(t, l, pollBin, filepath.Join(l.dataDir(1), "pki", "ca.crt"))
	l.mustKubectl(1, "create", "secret", "generic", "before-upgrade", "--from-literal=password=s3cret")
	l.mustKubectl(1, "create", "configmap", "before-upgrade", "--from-literal=k=v1")

	historyPath := filepath.Join(l.dir, "history.jsonl")
	verifyPath := filepath.Join(l.dir, "verify.json")
	client := c.startWorkload(clientBin, historyPath, verifyPath)
	time.Sleep(3 * time.Second)

	began := time.Now()
	for i := 1; i <= 3; i++ {
		f := c.begin(fmt.Sprintf("upgrade-m%d", i))
		c.ms[i].stop(syscall.SIGTERM, time.Minute)
		c.ms[i] = l.start(i, "start")
		c.ms[i].waitReady(3 * time.Minute)
		c.end(f)
		if out := c.ms[i].stdout.String(); !strings.Contains(out, "upgrade: m"+fmt.Sprint(i)+" ran k8s-master "+oldVersion) {
			t.Errorf("m%d's start does not say it upgrades from %s:\n%s", i, oldVersion, out)
		}
		c.recover("upgrade")
		if i == 1 {
			s := l.status(2)
			if !s.Mixed || !strings.Contains(s.Upgrade, "Still to upgrade: m2, m3") {
				t.Errorf("status with m1 upgraded: mixed %v, %q; want mixed, m2 and m3 still to upgrade", s.Mixed, s.Upgrade)
			}
		}
	}
	upgradeTime := time.Since(began)

	ops, v := c.stopWorkload(client, historyPath, verifyPath)
	check := chaos.Check(ops, 5*time.Minute)
	rep := chaos.NewReport(chaos.ReportInput{
		Title: "k8s-master rolling upgrade " + oldVersion + " to this build: 3 masters, VIP",
		Ops:   ops, Faults: c.faults, VIP: c.o.chaosSamples(), Check: &check, Verification: &v,
	})
	if err := rep.WriteMarkdown(filepath.Join(l.dir, "upgrade-report.md")); err != nil {
		t.Fatal(err)
	}
	var outages []time.Duration
	for _, o := range rep.Outages {
		outages = append(outages, o.Duration)
		t.Logf("%s: client-observed unavailability %s (%d gaps)", o.Fault.Kind, o.Duration, o.Gaps)
	}
	slices.Sort(outages)
	median, worst := outages[len(outages)/2], outages[len(outages)-1]
	t.Logf("rolling upgrade of 3 masters in %.1f s; unavailability per master: median %s, max %s; %d acknowledged operations",
		upgradeTime.Seconds(), median, worst, rep.Acknowledged)
	if check.Verdict != chaos.VerdictOK {
		t.Errorf("history not linearizable (%s) for keys %v", check.Verdict, check.Illegal())
	}
	if len(v.Lost) > 0 {
		t.Errorf("%d acknowledged operations lost: %s", len(v.Lost), strings.Join(v.Examples(5), "; "))
	}
	if rep.DualHolder > 0 {
		t.Errorf("%d VIP samples with two holders", rep.DualHolder)
	}
	if rep.Acknowledged < 100 {
		t.Errorf("only %d acknowledged operations: the workload barely ran", rep.Acknowledged)
	}
	// The upgrade issue's goal.
	if median > 100*time.Millisecond || worst > time.Second {
		t.Errorf("unavailability per upgraded master: median %s, max %s; the goal is at most 0.1 s and 1 s", median, worst)
	}

	t.Run("after the upgrade", func(t *testing.T) {
		want := strings.Fields(run(t, masterBin, "version"))
		s := l.status(1)
		for _, m := range s.Members {
			if m.Versions.Release != want[1] || m.Versions.Kubernetes != want[3] || m.Versions.Etcd != want[5] {
				t.Errorf("%s runs %+v, want %s, Kubernetes %s, etcd %s", m.Name, m.Versions, want[1], want[3], want[5])
			}
		}
		if s.Mixed {
			t.Errorf("status still says mixed: %s", s.Upgrade)
		}
		// etcd moves the cluster version itself once every member runs 3.7.
		pki := filepath.Join(l.dataDir(1), "pki")
		eventually(t, time.Minute, "etcd cluster version 3.7", func() error {
			out, err := exec.Command("ip", "netns", "exec", l.prefix+"m1", "curl", "-sS", "-m", "5",
				"--cacert", filepath.Join(pki, "etcd", "ca.crt"), "--cert", filepath.Join(pki, "apiserver-etcd-client.crt"),
				"--key", filepath.Join(pki, "apiserver-etcd-client.key"), "https://"+l.addr(1)+":2379/version").CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			var ver struct {
				Server  string `json:"etcdserver"`
				Cluster string `json:"etcdcluster"`
			}
			if err := json.Unmarshal(out, &ver); err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if !strings.HasPrefix(ver.Cluster, "3.7") {
				return fmt.Errorf("etcd server %s, cluster version %s", ver.Server, ver.Cluster)
			}
			return nil
		})
		if out := l.mustKubectl(1, "get", "secret", "before-upgrade", "-o", "jsonpath={.data.password}"); out != "czNjcmV0" {
			t.Errorf("the Secret written before the upgrade reads %q, want base64 of s3cret", out)
		}
		l.mustKubectl(2, "patch", "configmap", "before-upgrade", "-p", `{"data":{"k":"v2"}}`)
		if out := l.mustKubectl(3, "get", "configmap", "before-upgrade", "-o", "jsonpath={.data.k}"); out != "v2" {
			t.Errorf("the ConfigMap written before the upgrade and changed after reads %q, want v2", out)
		}
	})

	t.Run("a graceful stop hands etcd leadership over", func(t *testing.T) {
		leader := c.etcdLeader()
		c.ms[leader].stop(syscall.SIGTERM, time.Minute)
		if out := c.ms[leader].stdout.String(); !strings.Contains(out, "etcd leadership handed over") {
			t.Errorf("m%d led etcd and stopped without handing leadership over:\n%s", leader, tail(out, 15))
		}
		via := other(leader, 0)
		s, err := vipStatus(l, via)
		if err != nil {
			t.Fatal(err)
		}
		leaders := 0
		for _, m := range s.Members {
			if m.Leader {
				leaders++
			}
		}
		if leaders != 1 {
			t.Errorf("right after m%d stopped, m%d sees %d etcd leaders, want 1: %s", leader, via, leaders, s.names())
		}
		c.restart(leader)
		waitHealthy(t, l, 1)
	})

	t.Run("refusals change nothing", func(t *testing.T) {
		testUpgradeRefusals(t, c)
	})
}

// testUpgradeRefusals tries the starts the upgrade checks refuse, on a
// cluster of this build: two minors ahead, going back after the cluster
// moved on, and an upgrade while another master is down. Each must exit
// with its reason before anything changed.
func testUpgradeRefusals(t *testing.T, c *chaosLab) {
	l := c.l
	skip := stampedBinary(t, "v0.4.0", "v1.39.0")
	back := stampedBinary(t, "v0.1.1", "v1.36.3")
	next := stampedBinary(t, "v0.3.0", "v1.38.0")
	// Exit 78 (the unit does not retry) for a version refusal, 1 (retried
	// until the other master is back) for the quorum one.
	refused := func(i int, bin string, wantCode int, want string) {
		t.Helper()
		before := dataDigest(t, l.dataDir(i))
		out, errOut, code := l.runBinOn(fmt.Sprint(i), bin, "start", "--data-dir", l.dataDir(i))
		if code != wantCode || !strings.Contains(errOut, want) {
			t.Errorf("start of %s on m%d: exit %d, want %d and a refusal saying %q\n%s%s", filepath.Base(bin), i, code, wantCode, want, out, errOut)
		}
		if after := dataDigest(t, l.dataDir(i)); after != before {
			t.Errorf("the refused start of %s changed m%d's data directory", filepath.Base(bin), i)
		}
	}

	c.ms[3].stop(syscall.SIGTERM, time.Minute)
	refused(3, skip, 78, "Kubernetes moves one minor version at a time; upgrade every master to a v1.38 release first")
	refused(3, back, 78, "and a master does not go back to an older version once the cluster has moved on")

	// m3 stays down; upgrading m2 now would leave no quorum to spare.
	c.ms[2].stop(syscall.SIGTERM, time.Minute)
	refused(2, next, 1, "refusing to upgrade m2 while m3")
	c.ms[3] = l.start(3, "start")
	c.ms[2] = l.start(2, "start")
	c.ms[3].waitReady(3 * time.Minute)
	c.ms[2].waitReady(3 * time.Minute)
	waitHealthy(t, l, 1)
	want := strings.Fields(run(t, masterBin, "version"))[3]
	for _, m := range l.status(1).Members {
		if m.Versions.Kubernetes != want {
			t.Errorf("after the refusals %s runs Kubernetes %s, want %s", m.Name, m.Versions.Kubernetes, want)
		}
	}
}

// dataDigest sums a data directory's files (names, modes, contents),
// leaving out the lock and the control socket.
func dataDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel == ".lock" || rel == "control.sock" {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v %d\n", rel, info.Mode(), info.Size())
		if d.Type().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			h.Write(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
