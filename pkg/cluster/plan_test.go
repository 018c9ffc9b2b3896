package cluster

import (
	"bytes"
	"context"
	"errors"
	"github.com/k8s-master/k8s-master/pkg/component/componenttest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/k8s-master/k8s-master/internal/testkit"
	"github.com/k8s-master/k8s-master/pkg/component"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/controlplane"
	"github.com/k8s-master/k8s-master/pkg/datadir"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/vip"
)

// These tests run Init, Start and Join with fake components (no root, no
// real etcd member or apiserver): the real runner, PKI, data directory,
// lock, log and control socket, and a plain etcd behind the master's etcd
// client for the join service's registration and the first token.

// fakePart stands for any part of a master.
type fakePart struct {
	componenttest.Fake
}

func (f *fakePart) ClusterID() string            { return "c0ffee" }
func (f *fakePart) HasLeader() bool              { return true }
func (f *fakePart) TrustStale() bool             { return false }
func (f *fakePart) Reload(context.Context) error { return nil }
func (f *fakePart) Served() <-chan struct{}      { return make(chan struct{}) }
func (f *fakePart) Gate() *controlplane.VIPGate  { return nil }
func (f *fakePart) sure(t *testing.T, stops int) {
	t.Helper()
	if f.Stops() != stops {
		t.Errorf("%s stopped %d times, want %d", f.ID, f.Stops(), stops)
	}
}

// lab is one test's fakes.
type lab struct {
	j     *componenttest.Journal
	parts map[string]*fakePart
	b     builder
	// vipCloses counts closes of the VIP handle.
	vipCloses      int
	learnerRemoved bool
}

func newLab(t *testing.T) *lab {
	l := &lab{j: &componenttest.Journal{}, parts: map[string]*fakePart{}}
	part := func(name string) *fakePart {
		if p, ok := l.parts[name]; ok {
			return p
		}
		p := &fakePart{componenttest.Fake{ID: name, J: l.j}}
		l.parts[name] = p
		return p
	}
	for _, n := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "join service"} {
		part(n)
	}
	endpoint := testkit.StartEtcd(t)
	l.b = builder{
		etcd:      func(*config.Config, etcd.Options) etcdPart { return part("etcd") },
		apiServer: func(*config.Config, time.Duration) apiPart { return part("kube-apiserver") },
		controllerManager: func(*config.Config, apiPart, time.Duration) component.Component {
			return part("kube-controller-manager")
		},
		scheduler: func(*config.Config, apiPart, time.Duration) component.Component { return part("kube-scheduler") },
		joinService: func(*config.Config, *config.State, *clientv3.Client, func(error) string) component.Component {
			return part("join service")
		},
		connect: func(*config.Config) (*clientv3.Client, error) {
			return clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		},
		openVIP: func(c *config.Config, _ bool) (*vip.Address, func(), error) {
			if c.VIP == "" {
				return nil, nil, nil
			}
			return nil, func() { l.vipCloses++ }, nil
		},
		promote: func(context.Context, *config.Config, *join.Response) error { l.j.Add("promote"); return nil },
		removeLearner: func(*config.Config, *join.Response) error {
			l.learnerRemoved = true
			return nil
		},
	}
	return l
}

func testConfig(t *testing.T) *config.Config {
	c := config.Default()
	// A short path: the control socket's must fit a sockaddr_un.
	tmp, err := os.MkdirTemp("", "km")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	c.DataDir = filepath.Join(tmp, "data")
	c.Name, c.AdvertiseAddress, c.BindAddress = "m1", "127.0.0.1", "127.0.0.1"
	p := testkit.FreePorts(t, 7)
	c.APIServerPort, c.EtcdClientPort, c.EtcdPeerPort, c.EtcdMetricsPort = p[0], p[1], p[2], p[3]
	c.ControllerManagerPort, c.SchedulerPort, c.JoinPort = p[4], p[5], p[6]
	c.LogFile = filepath.Join(c.DataDir, "k8s-master.log")
	// These tests are about the core parts' order; scheduled snapshots
	// have their own tests (pkg/snapshot, TestSingleMaster).
	c.SnapshotInterval = 0
	return &c
}

var startOrder = []string{
	"start etcd", "start kube-apiserver", "start kube-controller-manager", "start kube-scheduler",
	"ready etcd", "ready kube-apiserver", "ready kube-controller-manager", "ready kube-scheduler", "start join service",
}
var stopOrder = []string{"stop join service", "stop kube-scheduler", "stop kube-controller-manager", "stop kube-apiserver", "stop etcd"}

func equal(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// progressSteps are the step names of the progress lines, in order.
func progressSteps(out string) []string {
	re := regexp.MustCompile(`(?m)^  (\S.*?) +\d+\.\d\d s  (ok|FAILED)$`)
	var steps []string
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		steps = append(steps, strings.TrimSpace(m[1])+" "+m[2])
	}
	return steps
}

func lockFree(t *testing.T, dir string) {
	t.Helper()
	l, err := datadir.Acquire(dir)
	if err != nil {
		t.Fatalf("the data directory's lock was leaked: %v", err)
	}
	l.Release()
}

func TestInitRunsTheListAndStopsInReverse(t *testing.T) {
	l := newLab(t)
	c := testConfig(t)
	var out bytes.Buffer
	m, err := initWith(context.Background(), c, Options{Out: &out}, l.b)
	if err != nil {
		t.Fatalf("init: %v\n%s", err, out.String())
	}
	equal(t, "progress", progressSteps(out.String()), []string{
		"preflight checks ok", "cluster PKI and credentials ok", "etcd member ready ok", "kube-apiserver ready ok",
		"controller-manager and scheduler leases ok", "join service ok", "first join token ok",
	})
	if !strings.Contains(out.String(), "ready in ") || !strings.Contains(out.String(), "join token (valid 24 h") {
		t.Errorf("no ready summary with the join token:\n%s", out.String())
	}
	equal(t, "start order", l.j.Lines("start", "ready"), startOrder)
	if _, err := config.ReadState(c.Layout().State()); err != nil {
		t.Fatalf("no state recorded: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.DataDir, "token")); err != nil {
		t.Fatalf("no token file: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Wait(ctx, 15*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	equal(t, "stop order", l.j.Lines("stop"), stopOrder)
	for _, p := range l.parts {
		p.sure(t, 1)
	}
	lockFree(t, c.DataDir)
	if _, err := os.Stat(filepath.Join(c.DataDir, "control.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
}

func TestInitFailingBeforeCommitTakesEverythingBack(t *testing.T) {
	l := newLab(t)
	l.parts["etcd"].NeverReady = true
	c := testConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var out bytes.Buffer
	_, err := initWith(ctx, c, Options{Out: &out}, l.b)
	if err == nil || strings.Contains(err.Error(), "the cluster was created") {
		t.Fatalf("err = %v, want etcd's failure without a hint to start", err)
	}
	equal(t, "progress", progressSteps(out.String()), []string{"preflight checks ok", "cluster PKI and credentials ok", "etcd member ready FAILED"})
	equal(t, "stop order", l.j.Lines("stop"), stopOrder[1:])
	for _, n := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		l.parts[n].sure(t, 1)
	}
	l.parts["join service"].sure(t, 0)
	if _, err := os.Stat(c.DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the data directory this init made is still there: %v", err)
	}
}

func TestInitFailingAfterCommitKeepsTheCluster(t *testing.T) {
	l := newLab(t)
	l.parts["kube-apiserver"].ReadyErr = errors.New("bind: address in use")
	c := testConfig(t)
	_, err := initWith(context.Background(), c, Options{}, l.b)
	if err == nil || !strings.Contains(err.Error(), "bind: address in use") || !strings.Contains(err.Error(), "the cluster was created, fix the cause and run: k8s-master start") {
		t.Fatalf("err = %v, want the apiserver's failure and how to go on", err)
	}
	equal(t, "stop order", l.j.Lines("stop"), stopOrder[1:])
	for _, n := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		l.parts[n].sure(t, 1)
	}
	if _, err := config.ReadState(c.Layout().State()); err != nil {
		t.Fatalf("the created cluster was not kept: %v", err)
	}
	lockFree(t, c.DataDir)
}

// The leaks of the hand-wired start: the lock stayed held when the CA could
// not be read, and the VIP handle stayed open on the identity checks.
func TestStartReleasesLockAndVIPWhenTheIdentityIsWrong(t *testing.T) {
	l := newLab(t)
	c := testConfig(t)
	c.VIP = "192.0.2.10"
	m, err := initWith(context.Background(), c, Options{}, l.b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m.Wait(ctx, 15*time.Second, nil)
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T)
		want   string
	}{
		// The fakes write no etcd data: the last identity check fails.
		{"no etcd data", func(*testing.T) {}, "has no etcd data"},
		{"CA of another cluster", func(t *testing.T) {
			st, err := config.ReadState(c.Layout().State())
			if err != nil {
				t.Fatal(err)
			}
			st.CAPin = "sha256:0000"
			if err := config.WriteState(c.Layout().State(), st); err != nil {
				t.Fatal(err)
			}
		}, "holds the CA of a different cluster"},
		{"CA unreadable", func(t *testing.T) {
			if err := os.Remove(pki.CertPath(c.Layout().PKIDir(), pki.ClusterCA)); err != nil {
				t.Fatal(err)
			}
		}, "cannot read the cluster CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.break_(t)
			before := l.vipCloses
			_, err := startWith(context.Background(), c, Options{}, l.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			lockFree(t, c.DataDir)
			if l.vipCloses != before+1 {
				t.Errorf("VIP handle closed %d times, want once", l.vipCloses-before)
			}
		})
	}
}

func TestJoinFailingBeforePromotionTakesTheLearnerBack(t *testing.T) {
	l := newLab(t)
	src := testConfig(t)
	if err := pki.CreateClusterSecrets(src, time.Now()); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, rel := range join.SharedFiles {
		data, err := os.ReadFile(filepath.Join(src.DataDir, rel))
		if err != nil {
			t.Fatal(err)
		}
		files[rel] = data
	}
	pin, err := pki.ReadPin(src)
	if err != nil {
		t.Fatal(err)
	}
	l.b.admit = func(context.Context, join.Token, join.Request, func(string)) (*join.Response, error) {
		l.j.Add("admitted")
		return &join.Response{ClusterID: "abc", CAPin: pin, EtcdClusterID: "c0ffee", MemberID: "1234", InitialCluster: "m0=https://127.0.0.1:1,m1=https://127.0.0.1:2",
			EtcdEndpoints: []string{"https://127.0.0.1:1"}, ServiceCIDR: "10.96.0.0/12", ClusterDomain: "cluster.local", Files: files}, nil
	}
	tok := join.Token{ID: "abcdef", Secret: strings.Repeat("b", 32), Endpoints: []string{"127.0.0.1:1"}, CAPin: pin}.String()

	t.Run("etcd never catches up", func(t *testing.T) {
		l.parts["etcd"].NeverReady = true
		c := testConfig(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var out bytes.Buffer
		_, err := joinWith(ctx, c, JoinOptions{Options: Options{Out: &out}, Token: tok}, l.b)
		if err == nil {
			t.Fatal("join succeeded")
		}
		t.Logf("join: %v", err)
		equal(t, "progress", progressSteps(out.String()), []string{"preflight checks ok", "admitted by the cluster (etcd learner added) ok",
			"cluster secrets and own certificates ok", "etcd member caught up and promoted FAILED"})
		if !l.learnerRemoved {
			t.Error("the learner was not taken back")
		}
		if _, err := os.Stat(c.DataDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the half-made member's files are still there: %v", err)
		}
		l.parts["etcd"].sure(t, 1)
	})
	t.Run("success", func(t *testing.T) {
		l.parts["etcd"].NeverReady, l.learnerRemoved = false, false
		l.j.Reset()
		for _, p := range l.parts {
			p.ResetStops()
		}
		c := testConfig(t)
		m, err := joinWith(context.Background(), c, JoinOptions{Token: tok}, l.b)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "start order", l.j.Lines("start", "ready", "promote", "admitted"), append([]string{"admitted", "start etcd", "ready etcd", "promote"}, append(startOrder[1:4], startOrder[5:]...)...))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		m.Wait(ctx, 15*time.Second, nil)
		equal(t, "stop order", l.j.Lines("stop"), stopOrder)
		if l.learnerRemoved {
			t.Error("a promoted member was taken back")
		}
		lockFree(t, c.DataDir)
	})
}

func TestControlSocketStopAndLeave(t *testing.T) {
	l := newLab(t)
	c := testConfig(t)
	m, err := initWith(context.Background(), c, Options{}, l.b)
	if err != nil {
		t.Fatal(err)
	}
	// A removed member stops etcd: with leave prepared that is a clean end.
	if err := m.PrepareLeave(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(l.j.Lines("start etcd")) != 1 {
		t.Fatal("etcd never started")
	}
	m.Stop()
	if err := m.Wait(context.Background(), 15*time.Second, nil); err != nil {
		t.Fatalf("a requested stop returned %v", err)
	}
	equal(t, "stop order", l.j.Lines("stop"), stopOrder)
}
