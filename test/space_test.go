package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestEtcdSpace fills a 3-master cluster with a 32 MiB etcd quota until
// etcd refuses writes (NOSPACE), checks that reads and `status` still work,
// deletes what it wrote and waits for writes to work again with no restart
// and nothing else done. From the masters' logs: the defragmentations never
// overlapped, and the leader went last.
func TestEtcdSpace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several control planes")
	}
	l := newLab(t, 3)
	quota := []string{"--etcd-quota-bytes", "32Mi"}
	m1 := l.start(1, "init", quota...)
	m1.waitReady(2 * time.Minute)
	data, err := os.ReadFile(filepath.Join(l.dataDir(1), "token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(data))
	m2 := l.start(2, "join", append([]string{"--token", token}, quota...)...)
	m2.waitReady(4 * time.Minute)
	m3 := l.start(3, "join", append([]string{"--token", token}, quota...)...)
	m3.waitReady(4 * time.Minute)
	masters := []*master{m1, m2, m3}

	// ~0.9 MB per ConfigMap: the apiserver stores it as is.
	payload := filepath.Join(l.dir, "payload")
	if err := os.WriteFile(payload, []byte(strings.Repeat("0123456789abcdef", 900_000/16)), 0o600); err != nil {
		t.Fatal(err)
	}
	// Fill until writes stay refused: the keeper gives back what
	// compaction and defragmentation can (old revisions, bbolt's slack)
	// and disarms while there is room, so the first NOSPACE may pass.
	var names []string
	lastOK := time.Now()
	for i := 0; time.Since(lastOK) < 25*time.Second; {
		if i >= 60 {
			t.Fatalf("writes still accepted after %d ConfigMaps of 0.9 MB under a 32 MiB quota", i)
		}
		name := fmt.Sprintf("fill-%02d", i)
		out, err := l.kubectl(1, "create", "configmap", name, "--from-file=data="+payload)
		if err == nil {
			names, lastOK = append(names, name), time.Now()
			i++
			continue
		}
		if !strings.Contains(out, "etcdserver: mvcc: database space exceeded") {
			t.Fatalf("create %s: %v %s; want success or NOSPACE", name, err, out)
		}
		time.Sleep(time.Second)
	}
	t.Logf("NOSPACE for good after %d ConfigMaps", len(names))
	if out := l.mustKubectl(2, "get", "configmap", names[0], "-o", "name"); strings.TrimSpace(out) != "configmap/"+names[0] {
		t.Fatalf("read under NOSPACE: %q", out)
	}
	table := l.mustRun(1, "status", "--data-dir", l.dataDir(1))
	t.Logf("status under NOSPACE:\n%s", table)
	if !strings.Contains(table, "etcd NOSPACE ALARM") || !strings.Contains(table, "delete objects") || strings.Contains(table, "UNHEALTHY") {
		t.Errorf("status does not explain the alarm:\n%s", table)
	}
	var leader string
	for _, m := range l.status(1).Members {
		if m.Leader {
			leader = m.Name
		}
	}
	var st struct {
		Members []struct {
			Name  string `json:"name"`
			Quota int64  `json:"dbSizeQuotaBytes"`
			InUse int64  `json:"dbSizeInUseBytes"`
		} `json:"members"`
		Alarm *struct {
			Alarm, What, Do string
		} `json:"etcdSpaceAlarm"`
	}
	if err := json.Unmarshal([]byte(l.mustRun(1, "status", "--data-dir", l.dataDir(1), "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Alarm == nil || st.Alarm.Alarm != "NOSPACE" || !strings.Contains(st.Alarm.Do, "delete objects") {
		t.Errorf("status -o json: alarm %+v", st.Alarm)
	}
	for _, m := range st.Members {
		if m.Quota != 32<<20 || m.InUse <= 0 {
			t.Errorf("status -o json: %s has quota %d, in use %d; want 32 MiB and the size in use", m.Name, m.Quota, m.InUse)
		}
	}

	deleted := time.Now()
	l.mustKubectl(1, append([]string{"delete", "configmap"}, names...)...)
	var back time.Duration
	for i := 0; ; i++ {
		out, err := l.kubectl(3, "create", "configmap", fmt.Sprintf("after-%d", i), "--from-literal=k=v")
		if err == nil {
			back = time.Since(deleted)
			break
		}
		if time.Since(deleted) > 90*time.Second {
			t.Fatalf("writes still refused 90 s after the deletes: %s", out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("writes back %.1f s after the deletes (etcd leader then: %s)", back.Seconds(), leader)
	for i, m := range masters {
		if !m.running() {
			t.Errorf("m%d exited", i+1)
		}
	}
	if out := l.mustRun(2, "status", "--data-dir", l.dataDir(2)); strings.Contains(out, "NOSPACE") {
		t.Errorf("status still shows the alarm after writes resumed:\n%s", out)
	}

	// The defragmentations since the deletes, from all three logs: one at a
	// time, every member, and each by another master's keeper (the one
	// beside the leader): a leader is never defragmented in place, it
	// hands its leadership over first and goes last.
	// klog flushes its buffer every few seconds.
	var runs []defragRun
	var handovers int
	eventually(t, 20*time.Second, "every defragmentation logged", func() error {
		runs, handovers = defragRuns(t, l, deleted)
		seen := map[string]bool{}
		for _, r := range runs {
			if r.end.IsZero() {
				return fmt.Errorf("%v", runs)
			}
			seen[r.member] = true
		}
		if len(seen) < 3 || handovers == 0 {
			return fmt.Errorf("%v, %d handovers", runs, handovers)
		}
		return nil
	})
	t.Logf("defragmentations (member by keeper): %v; leadership handed over %d time(s)", runs, handovers)
	for i := 1; i <= 3; i++ {
		data, _ := os.ReadFile(filepath.Join(l.dataDir(i), "k8s-master.log"))
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "keeper.go") {
				t.Logf("m%d: %s", i, line)
			}
		}
	}
	members := map[string]bool{}
	for i, r := range runs {
		members[r.member] = true
		if r.end.IsZero() {
			t.Errorf("defragmentation of %s never ended", r.member)
		}
		if i > 0 && r.start.Before(runs[i-1].end) {
			t.Errorf("defragmentations overlapped: %v and %v", runs[i-1], r)
		}
		if r.member == r.keeper {
			t.Errorf("%s defragmented its own member while leading", r.keeper)
		}
	}
	if len(members) != 3 {
		t.Errorf("defragmented %v; want every member", runs)
	}
	if handovers == 0 {
		t.Error("no keeper handed its leadership over before its own member's defragmentation")
	}
	total := 0.0
	for i := 1; i <= 3; i++ {
		total += metricSum(l.mustKubectl(i, "get", "--raw", "/metrics"), `k8s_master_etcd_defrag_total{member=`, `result="ok"`)
	}
	if total < 3 {
		t.Errorf("k8s_master_etcd_defrag_total adds up to %v over the masters; want at least 3", total)
	}
}

type defragRun struct {
	member     string
	keeper     string
	start, end time.Time
}

func (r defragRun) String() string {
	return fmt.Sprintf("%s by %s %s-%s", r.member, r.keeper, r.start.Format("15:04:05.000"), r.end.Format("15:04:05.000"))
}

var klogLine = regexp.MustCompile(`^I(\d{4} \d\d:\d\d:\d\d\.\d{6}) .*"(etcd defragmentation started|etcd defragmentation finished|Handed etcd leadership over[^"]*)" member="([^"]+)"`)

// defragRuns reads the defragmentations that started after since from the
// masters' component logs (klog lines, local time, this year), in order,
// and counts the leadership handovers.
func defragRuns(t *testing.T, l *lab, since time.Time) ([]defragRun, int) {
	var runs []defragRun
	handovers := 0
	for i := 1; i <= 3; i++ {
		f, err := os.Open(filepath.Join(l.dataDir(i), "k8s-master.log"))
		if err != nil {
			t.Fatal(err)
		}
		open := map[string]int{}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			m := klogLine.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			at, err := time.ParseInLocation("2006 0102 15:04:05.000000", strconv.Itoa(since.Year())+" "+m[1], time.Local)
			if err != nil || at.Before(since) {
				continue
			}
			switch {
			case strings.HasPrefix(m[2], "Handed"):
				handovers++
			case strings.HasSuffix(m[2], "started"):
				open[m[3]] = len(runs)
				runs = append(runs, defragRun{member: m[3], keeper: fmt.Sprintf("m%d", i), start: at})
			default:
				j, ok := open[m[3]]
				if !ok {
					continue
				}
				runs[j].end = at
				delete(open, m[3])
			}
		}
		f.Close()
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].start.Before(runs[j].start) })
	return runs, handovers
}

// metricSum adds up the samples of the lines of a Prometheus text page that
// start with prefix and contain label.
func metricSum(page, prefix, label string) float64 {
	sum := 0.0
	for _, line := range strings.Split(page, "\n") {
		if !strings.HasPrefix(line, prefix) || !strings.Contains(line, label) {
			continue
		}
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
