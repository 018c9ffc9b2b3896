package test

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/k8s-master/k8s-master/test/chaos"
)

var (
	chaosRounds = flag.Int("chaos.rounds", 1, "times each fault is injected (make chaos: 5)")
	chaosReport = flag.String("chaos.report", "", "directory for the report (chaos-report.md, chaos-timeline.png); default: the test's temp dir")
)

// chaosLab is TestChaos's state: the lab, its masters and the record of
// faults.
type chaosLab struct {
	t      *testing.T
	l      *lab
	o      *vipObserver
	ms     map[int]*master
	faults []chaos.Fault
	// diskDir is the tmpfs that holds m3's data directory, for the
	// disk-full fault.
	diskDir string
}

// TestChaos is the reliability lab: 3 masters with a VIP, a workload of
// compare-and-swap updates, reads and creates through the VIP from the
// client namespace, and faults injected one after another with recovery in
// between. The history must be linearizable, no acknowledged operation may
// be lost, no VIP sample may show two holders, and every master must catch
// up after each fault. -chaos.rounds repeats every fault (make chaos: 5).
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several control planes")
	}
	l := newLab(t, 3)
	c := &chaosLab{t: t, l: l, ms: map[int]*master{}}
	c.mountDisk()
	pollBin := buildTool(t, "pollvip")
	clientBin := buildTool(t, "chaosclient")
	c.o = startVIPObserver(t, l, 3)
	defer c.o.finish(t)
	// Faults make transitions; only two holders at once is a failure here.
	c.o.phase("chaos", holdersAny)

	c.ms[1] = l.start(1, "init", vipInitFlags...)
	c.ms[1].waitReady(2 * time.Minute)
	token := strings.TrimSpace(readFile(t, filepath.Join(l.dataDir(1), "token")))
	c.ms[2] = l.start(2, "join", "--token", token)
	c.ms[2].waitReady(4 * time.Minute)
	// m3 joins while the client namespace floods the join service behind
	// the VIP with malformed and unauthenticated requests.
	flood := c.startJoinFlood(buildTool(t, "joinflood"), token)
	c.ms[3] = l.start(3, "join", "--token", token)
	c.ms[3].waitReady(4 * time.Minute)
	c.checkJoinFlood(flood)
	waitHealthy(t, l, 1) // 3 voters: no stray learner from the flood
	c.o.startPoller(t, l, pollBin, filepath.Join(l.dataDir(1), "pki", "ca.crt"))

	historyPath := filepath.Join(l.dir, "history.jsonl")
	verifyPath := filepath.Join(l.dir, "verify.json")
	client := c.startWorkload(clientBin, historyPath, verifyPath)
	time.Sleep(3 * time.Second) // a baseline before the first fault

	kinds := []struct {
		name   string
		inject func()
	}{
		{"kill-holder", c.killHolder},
		{"kill-etcd-leader", c.killEtcdLeader},
		{"rolling-restart", c.rollingRestart},
		{"partition-holder", c.partitionHolder},
		{"partition-etcd-leader", c.partitionEtcdLeader},
		{"kill-two", c.killTwo},
		{"disk-full", c.diskFull},
	}
	for round := 1; round <= *chaosRounds; round++ {
		for _, k := range kinds {
			t.Logf("round %d: %s", round, k.name)
			k.inject()
			c.recover(k.name)
		}
	}

	ops, v := c.stopWorkload(client, historyPath, verifyPath)
	check := chaos.Check(ops, 5*time.Minute)

	dir := *chaosReport
	var err error
	if dir == "" {
		dir = l.dir
	} else if dir, err = filepath.Abs(dir); err != nil {
		t.Fatal(err)
	}
	rep := chaos.NewReport(chaos.ReportInput{
		Title:        fmt.Sprintf("k8s-master reliability lab: 3 masters, VIP, %d round(s) of %d fault kinds", *chaosRounds, len(kinds)),
		Ops:          ops,
		Faults:       c.faults,
		VIP:          c.o.chaosSamples(),
		Check:        &check,
		Verification: &v,
	})
	if err := rep.WriteMarkdown(filepath.Join(dir, "chaos-report.md")); err != nil {
		t.Fatal(err)
	}
	if err := rep.WritePNGFile(filepath.Join(dir, "chaos-timeline.png")); err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %s\n%s", filepath.Join(dir, "chaos-report.md"), rep.Markdown())

	if check.Verdict != chaos.VerdictOK {
		path := filepath.Join(dir, "chaos-linearizability.html")
		if err := check.WriteVisualization(path); err != nil {
			t.Log(err)
		}
		t.Errorf("history not linearizable (%s) for keys %v; see %s", check.Verdict, check.Illegal(), path)
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
	// What the VIP issue promises: a crashed holder is replaced within 5 s.
	for _, k := range rep.Kinds {
		if k.Kind == "kill-holder" && k.Max > 5*time.Second {
			t.Errorf("kill-holder: client-observed unavailability up to %s, the VIP promises at most 5 s", k.Max)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// buildTool builds test/tools/NAME into the test's temp dir.
func buildTool(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	build := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-o", bin, "./tools/"+name)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	return bin
}

// mountDisk puts m3's data directory on a small tmpfs of its own, so that
// the disk-full fault fills that master's disk only.
func (c *chaosLab) mountDisk() {
	c.diskDir = c.l.dataDir(3)
	if err := os.MkdirAll(c.diskDir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512m,mode=0700", "tmpfs", c.diskDir).CombinedOutput(); err != nil {
		c.t.Skipf("cannot mount a tmpfs for the disk-full fault: %v %s", err, out)
	}
	// Lazy: the master may still hold files open when this runs; the lab
	// kills it right after.
	c.t.Cleanup(func() { exec.Command("umount", "-l", c.diskDir).Run() })
}

func (c *chaosLab) startWorkload(bin, historyPath, verifyPath string) *exec.Cmd {
	t := c.t
	cmd := exec.Command("ip", "netns", "exec", c.l.prefix+"c", bin,
		"-kubeconfig", c.l.kubeconfig(1), "-history", historyPath, "-verify", verifyPath, "-clients", "4", "-keys", "3")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the workload did not start within 2 minutes:\n%s", stderr.String())
	}
	return cmd
}

// stopWorkload stops the workload (it reads the final state and
// verifies) and loads its history and verification.
func (c *chaosLab) stopWorkload(client *exec.Cmd, historyPath, verifyPath string) ([]chaos.Op, chaos.Verification) {
	t := c.t
	client.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- client.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("chaosclient: %v", err)
		}
	case <-time.After(3 * time.Minute):
		client.Process.Kill()
		t.Fatal("chaosclient did not finish within 3 minutes of SIGTERM")
	}
	ops, err := chaos.LoadOps(historyPath)
	if err != nil {
		t.Fatal(err)
	}
	var v chaos.Verification
	if err := json.Unmarshal([]byte(readFile(t, verifyPath)), &v); err != nil {
		t.Fatal(err)
	}
	return ops, v
}

type joinFlood struct {
	cmd *exec.Cmd
	out strings.Builder
	err syncBuffer
}

func (c *chaosLab) startJoinFlood(bin, token string) *joinFlood {
	id, _, _ := strings.Cut(strings.TrimPrefix(token, "km1:"), ".")
	f := &joinFlood{}
	f.cmd = exec.Command("ip", "netns", "exec", c.l.prefix+"c", bin,
		"-url", "https://"+testVIP+":9443/v1/join", "-n", "3000", "-token-id", id)
	f.cmd.Stdout, f.cmd.Stderr = &f.out, &f.err
	if err := f.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { f.cmd.Process.Kill() })
	return f
}

// checkJoinFlood wants every bad request refused with a clear 4xx: none
// admitted, none failing the server.
func (c *chaosLab) checkJoinFlood(f *joinFlood) {
	t := c.t
	if err := f.cmd.Wait(); err != nil {
		t.Fatalf("joinflood: %v\n%s", err, f.err.String())
	}
	var sum struct {
		Requests int            `json:"requests"`
		Seconds  float64        `json:"seconds"`
		ByStatus map[string]int `json:"byStatus"`
		Errors   []string       `json:"errors"`
	}
	if err := json.Unmarshal([]byte(f.out.String()), &sum); err != nil {
		t.Fatalf("joinflood output: %v\n%s", err, f.out.String())
	}
	t.Logf("join flood during m3's join: %d requests in %.1f s, answers by status %v", sum.Requests, sum.Seconds, sum.ByStatus)
	total := 0
	for code, n := range sum.ByStatus {
		total += n
		switch code {
		case "400", "401", "403", "405", "429":
		default:
			t.Errorf("join flood: %d answers with status %s (0: no answer; errors %v)", n, code, sum.Errors)
		}
	}
	if total != sum.Requests || total < 1000 {
		t.Errorf("join flood: %d answers for %d requests", total, sum.Requests)
	}
}

// begin and end bracket a fault in the record.
func (c *chaosLab) begin(kind string) int {
	c.faults = append(c.faults, chaos.Fault{Kind: kind, Start: time.Now()})
	return len(c.faults) - 1
}

func (c *chaosLab) end(i int) { c.faults[i].End = time.Now() }

// holder is the master that holds the VIP now.
func (c *chaosLab) holder() int {
	return c.o.waitHolder(c.t, c.l, c.running(), 0, 30*time.Second)
}

// running is some master that runs.
func (c *chaosLab) running() int {
	for i := 1; i <= 3; i++ {
		if m := c.ms[i]; m != nil && m.running() {
			return i
		}
	}
	c.t.Fatal("no master runs")
	return 0
}

// etcdLeader is the master whose etcd member leads.
func (c *chaosLab) etcdLeader() int {
	var leader int
	eventually(c.t, 30*time.Second, "an etcd leader", func() error {
		s, err := vipStatus(c.l, c.running())
		if err != nil {
			return err
		}
		for _, m := range s.Members {
			if m.Leader {
				leader, err = strconv.Atoi(strings.TrimPrefix(m.Name, "m"))
				return err
			}
		}
		return fmt.Errorf("no leader among %s", s.names())
	})
	return leader
}

func (c *chaosLab) restart(i int) {
	c.ms[i] = c.l.start(i, "start")
	c.ms[i].waitReady(3 * time.Minute)
}

func (c *chaosLab) killHolder() {
	h := c.holder()
	f := c.begin("kill-holder")
	c.ms[h].stop(syscall.SIGKILL, 10*time.Second)
	c.o.waitHolder(c.t, c.l, other(h, 0), h, 30*time.Second)
	c.end(f)
	c.restart(h)
}

// killEtcdLeader kills the etcd leader while another master holds the VIP;
// when one master is both, a graceful restart of it first moves both (it is
// recorded as a rolling-restart fault).
func (c *chaosLab) killEtcdLeader() {
	for range 3 {
		if c.etcdLeader() != c.holder() {
			break
		}
		c.restartGracefully(c.holder())
		c.recover("rolling-restart")
	}
	leader := c.etcdLeader()
	f := c.begin("kill-etcd-leader")
	c.ms[leader].stop(syscall.SIGKILL, 10*time.Second)
	time.Sleep(5 * time.Second)
	c.end(f)
	c.restart(leader)
}

func (c *chaosLab) restartGracefully(i int) {
	f := c.begin("rolling-restart")
	c.ms[i].stop(syscall.SIGTERM, time.Minute)
	c.restart(i)
	c.end(f)
}

// rollingRestart stops and starts every master in turn, as an upgrade
// does, each back before the next.
func (c *chaosLab) rollingRestart() {
	for i := 1; i <= 3; i++ {
		c.restartGracefully(i)
		waitHealthy(c.t, c.l, i)
	}
}

func (c *chaosLab) partition(kind string, i int) {
	f := c.begin(kind)
	if out, err := c.l.cmd("cut", strconv.Itoa(i)).CombinedOutput(); err != nil {
		c.t.Fatalf("cut m%d: %v %s", i, err, out)
	}
	// The majority side takes (or keeps) the VIP; the cut lasts long
	// enough for the minority member to lose its leader either way.
	cut := time.Now()
	c.o.waitHolder(c.t, c.l, other(i, 0), i, 30*time.Second)
	time.Sleep(max(2*time.Second, 8*time.Second-time.Since(cut)))
	if out, err := c.l.cmd("heal", strconv.Itoa(i)).CombinedOutput(); err != nil {
		c.t.Fatalf("heal m%d: %v %s", i, err, out)
	}
	c.end(f)
}

func (c *chaosLab) partitionHolder()     { c.partition("partition-holder", c.holder()) }
func (c *chaosLab) partitionEtcdLeader() { c.partition("partition-etcd-leader", c.etcdLeader()) }

// killTwo kills the holder and one other master: the third has no quorum,
// so nobody holds the VIP until they are back.
func (c *chaosLab) killTwo() {
	h := c.holder()
	o := other(h, 0)
	f := c.begin("kill-two")
	c.ms[h].stop(syscall.SIGKILL, 10*time.Second)
	c.ms[o].stop(syscall.SIGKILL, 10*time.Second)
	time.Sleep(5 * time.Second)
	c.ms[h] = c.l.start(h, "start")
	c.ms[o] = c.l.start(o, "start")
	c.ms[h].waitReady(3 * time.Minute)
	c.ms[o].waitReady(3 * time.Minute)
	c.end(f)
}

// diskFull fills the disk of m3's data directory for 10 s. etcd may stop
// (a write that cannot land is fatal to a member); then m3 is restarted
// once there is room again.
func (c *chaosLab) diskFull() {
	var st unix.Statfs_t
	if err := unix.Statfs(c.diskDir, &st); err != nil {
		c.t.Fatal(err)
	}
	filler := filepath.Join(c.diskDir, "filler")
	f := c.begin("disk-full")
	fd, err := os.Create(filler)
	if err != nil {
		c.t.Fatal(err)
	}
	// Everything that is left, in one allocation (tmpfs counts pages).
	free := int64(st.Bavail) * int64(st.Bsize)
	for free > 0 {
		if err := unix.Fallocate(int(fd.Fd()), 0, 0, free); err == nil {
			break
		}
		free -= 1 << 20
	}
	fd.Close()
	if err := unix.Statfs(c.diskDir, &st); err != nil {
		c.t.Fatal(err)
	}
	if left := int64(st.Bavail) * int64(st.Bsize); left > 1<<20 {
		c.t.Errorf("disk-full: %d bytes still free on m3's data disk after filling it", left)
	}
	time.Sleep(10 * time.Second)
	if err := os.Remove(filler); err != nil {
		c.t.Fatal(err)
	}
	c.end(f)
	if !c.ms[3].running() {
		c.t.Logf("disk-full: m3 stopped (%v); starting it again", c.ms[3].exitErr)
		c.restart(3)
	}
}

// recover waits until the cluster is whole again after a fault: 3 healthy
// voters, every apiserver ready, a VIP holder, every member caught up with
// the log as it was once they were healthy, and the client succeeding.
func (c *chaosLab) recover(kind string) {
	t := c.t
	via := c.running()
	waitHealthy(t, c.l, via)
	var target uint64
	st, err := vipStatus(c.l, via)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.Members {
		target = max(target, m.RaftIndex)
	}
	eventually(t, time.Minute, fmt.Sprintf("after %s every member applied raft index %d", kind, target), func() error {
		s, err := vipStatus(c.l, via)
		if err != nil {
			return err
		}
		for _, m := range s.Members {
			if m.RaftAppliedIndex < target {
				return fmt.Errorf("%s applied %d", m.Name, m.RaftAppliedIndex)
			}
		}
		return nil
	})
	c.holder()
	c.o.poll.waitOK(t, time.Now(), 5, time.Minute)
	// A calm stretch, so that the next fault's window starts after the
	// workload is back too.
	time.Sleep(2 * time.Second)
}

// chaosSamples converts the sampler's record for the report.
func (o *vipObserver) chaosSamples() []chaos.VIPSample {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]chaos.VIPSample, 0, len(o.samples))
	for _, s := range o.samples {
		hs := make([]string, 0, len(s.holders))
		for _, h := range slices.Sorted(slices.Values(s.holders)) {
			hs = append(hs, fmt.Sprintf("m%d", h))
		}
		out = append(out, chaos.VIPSample{At: s.at, Holders: hs})
	}
	return out
}
