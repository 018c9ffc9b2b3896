package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHA builds a 3-master cluster in a netns lab from one token and takes it
// through the cases of the join issue: bad tokens refused with nothing
// changed, two joins at once, replication, leases, the kubernetes Service,
// a killed master catching up, leave and join again, member remove.
func TestHA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several control planes")
	}
	l := newLab(t, 4)
	m1 := l.start(1, "init")
	m1.waitReady(2 * time.Minute)
	tokenFile := filepath.Join(l.dataDir(1), "token")
	st, err := os.Stat(tokenFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("init's token file: %v mode %v", err, st)
	}
	data, _ := os.ReadFile(tokenFile)
	token := strings.TrimSpace(string(data))
	// The token lines follow the "ready in" line.
	eventually(t, 10*time.Second, "init prints its token", func() error {
		if !strings.Contains(m1.stdout.String(), token) {
			return fmt.Errorf("not in:\n%s", m1.stdout.String())
		}
		return nil
	})

	t.Run("bad tokens are refused and change nothing", func(t *testing.T) {
		// m4 is another cluster: a server with another CA.
		m4 := l.start(4, "init")
		m4.waitReady(2 * time.Minute)
		otherCluster := strings.Replace(token, l.addr(1)+":9443", l.addr(4)+":9443", 1)

		expiring := strings.TrimSpace(l.mustRun(1, "token", "create", "--data-dir", l.dataDir(1), "--ttl", "1s"))
		revoked := strings.TrimSpace(l.mustRun(1, "token", "create", "--data-dir", l.dataDir(1), "--description", "to revoke"))
		l.mustRun(1, "token", "revoke", "--data-dir", l.dataDir(1), revoked[4:10])
		time.Sleep(1500 * time.Millisecond)
		id, secret := token[4:10], token[11:43]
		cases := []struct{ name, token, want string }{
			{"malformed", "km1:nonsense", "malformed join token"},
			{"wrong secret", strings.Replace(token, secret, strings.Repeat("x", 32), 1), "wrong join token secret"},
			{"unknown id", strings.Replace(token, id+".", "zzzzzz.", 1), "unknown join token"},
			{"expired", expiring, "expired"},
			{"revoked", revoked, "revoked"},
			{"CA pin of another cluster", otherCluster, "does not match the token's CA pin"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				dir := filepath.Join(l.dir, "bad-"+strings.ReplaceAll(tc.name, " ", "-"))
				// From the client host: the join service slows a source down
				// after failures (the joiner waits that out), and m2 must
				// not inherit that.
				_, stderr, code := l.runOn("c", "join", "--data-dir", dir, "--advertise-address", "10.99.0.100", "--token", tc.token)
				if code == 0 || !strings.Contains(stderr, tc.want) {
					t.Fatalf("exit %d, stderr %q; want a refusal mentioning %q", code, stderr, tc.want)
				}
				if strings.Contains(stderr, secret) && tc.name != "malformed" {
					t.Errorf("the error shows the token secret: %q", stderr)
				}
				assertAbsent(t, dir)
				if s := l.status(1); len(s.Members) != 1 {
					t.Fatalf("member list changed: %s", s.names())
				}
			})
		}
		m4.stop(syscall.SIGTERM, 20*time.Second)
	})

	t.Run("a join that fails midway takes back its learner and files", func(t *testing.T) {
		// The joiner advertises an address other than the one it talks
		// from: the cluster admits it as a learner, then etcd's peer TLS
		// refuses its member (certificate and source address differ).
		if out, err := exec.Command("ip", "-n", l.prefix+"c", "addr", "add", "10.98.0.100/32", "dev", "eth0").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		dir := filepath.Join(l.dir, "failing")
		out, stderr, code := l.runOn("c", "join", "--data-dir", dir, "--advertise-address", "10.98.0.100", "--token", token)
		if code == 0 || !strings.Contains(out, "admitted by the cluster (etcd learner added)") || !strings.Contains(stderr, "etcd") {
			t.Fatalf("exit %d; want admission, then an etcd failure:\n%s%s", code, out, stderr)
		}
		assertAbsent(t, dir)
		if s := l.status(1); len(s.Members) != 1 || s.Learners() != 0 {
			t.Fatalf("the learner was left behind: %s", s.names())
		}
	})

	// Two joins at the same moment: both end as voters.
	m2 := l.start(2, "join", "--token", token)
	m3 := l.start(3, "join", "--token", token)
	m2.waitReady(4 * time.Minute)
	m3.waitReady(4 * time.Minute)
	s := l.status(1)
	if len(s.Members) != 3 || s.Voters != 3 || s.HealthyVoters != 3 || s.FailuresTolerated != 1 {
		t.Fatalf("after two joins: %s, %+v", s.names(), s)
	}
	leaders := 0
	for _, m := range s.Members {
		if m.Leader {
			leaders++
		}
		if !m.APIServerReady {
			t.Errorf("apiserver of %s not ready", m.Name)
		}
	}
	if leaders != 1 {
		t.Errorf("%d etcd leaders", leaders)
	}
	// Without a VIP, workers are sent to the first master: the joiners'
	// starts left cluster-info as m1 published it.
	if line := l.mustRun(3, "token", "create", "--worker", "--data-dir", l.dataDir(3)); !strings.HasPrefix(line, "kubeadm join "+l.addr(1)+":6443 --token ") {
		t.Errorf("m3's worker join line %q, want one naming m1 (%s:6443)", line, l.addr(1))
	}

	t.Run("written through m1, read through m3", func(t *testing.T) {
		l.mustKubectl(1, "create", "configmap", "from-m1", "--from-literal=k=v1")
		if out := l.mustKubectl(3, "get", "configmap", "from-m1", "-o", "jsonpath={.data.k}"); out != "v1" {
			t.Fatalf("read through m3: %q", out)
		}
	})

	t.Run("one holder per leader lease", func(t *testing.T) {
		for _, lease := range []string{"kube-controller-manager", "kube-scheduler"} {
			holder := l.mustKubectl(2, "get", "lease", "-n", "kube-system", lease, "-o", "jsonpath={.spec.holderIdentity}")
			host, _, _ := strings.Cut(holder, "_")
			if host != "m1" && host != "m2" && host != "m3" {
				t.Errorf("%s held by %q, not by one master", lease, holder)
			}
		}
	})

	t.Run("kubernetes Service lists every apiserver", func(t *testing.T) {
		want := l.addr(1) + " " + l.addr(2) + " " + l.addr(3)
		eventually(t, time.Minute, "3 endpoints", func() error {
			out, err := l.kubectl(1, "get", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes", "-o", "jsonpath={.items[*].endpoints[*].addresses[*]}")
			if err != nil {
				return err
			}
			ips := strings.Fields(out)
			sort.Strings(ips)
			if strings.Join(ips, " ") != want {
				return fmt.Errorf("endpoints %q", out)
			}
			return nil
		})
	})

	t.Run("a killed master: the others serve writes, it catches up", func(t *testing.T) {
		m2.stop(syscall.SIGKILL, 10*time.Second)
		eventually(t, 30*time.Second, "m2 seen down", func() error {
			if s := l.status(1); s.HealthyVoters != 2 || s.FailuresTolerated != 0 {
				return fmt.Errorf("%s", s.names())
			}
			return nil
		})
		l.mustKubectl(1, "create", "configmap", "while-m2-down", "--from-literal=k=v2")
		l.mustKubectl(3, "get", "configmap", "while-m2-down")
		// Leaving m3 now would cost the quorum: refused.
		if _, stderr, code := l.run(3, "leave", "--yes", "--data-dir", l.dataDir(3)); code == 0 || !strings.Contains(stderr, "quorum") {
			t.Errorf("leave with a voter down: exit %d, %q", code, stderr)
		}
		m2 = l.start(2, "start")
		m2.waitReady(2 * time.Minute)
		if out := l.mustKubectl(2, "get", "configmap", "while-m2-down", "-o", "jsonpath={.data.k}"); out != "v2" {
			t.Fatalf("m2 after restart reads %q", out)
		}
		if s := l.status(2); s.HealthyVoters != 3 {
			t.Fatalf("after restart: %s", s.names())
		}
	})

	t.Run("leave shrinks to two; the left node joins again", func(t *testing.T) {
		out := l.mustRun(3, "leave", "--yes", "--data-dir", l.dataDir(3))
		if !strings.Contains(out, "left the cluster") {
			t.Errorf("leave output: %q", out)
		}
		select {
		case <-m3.exited:
		case <-time.After(30 * time.Second):
			t.Fatal("m3's master still runs after leave")
		}
		if s := l.status(1); len(s.Members) != 2 || s.Voters != 2 {
			t.Fatalf("after leave: %s", s.names())
		}
		if _, err := os.Stat(filepath.Join(l.dataDir(3), "state.json")); err == nil {
			t.Error("m3 still has its state after leave")
		}
		token2 := strings.TrimSpace(l.mustRun(1, "token", "create", "--data-dir", l.dataDir(1)))
		if !strings.Contains(token2, l.addr(2)+":9443") {
			t.Errorf("a new token should name every master's join service: %s", token2)
		}
		m3 = l.start(3, "join", "--token", token2)
		m3.waitReady(4 * time.Minute)
		if s := l.status(1); len(s.Members) != 3 || s.HealthyVoters != 3 {
			t.Fatalf("after joining again: %s", s.names())
		}
	})

	t.Run("member remove for a master gone for good", func(t *testing.T) {
		m3.stop(syscall.SIGKILL, 10*time.Second)
		eventually(t, 30*time.Second, "m3 seen down", func() error {
			if s := l.status(1); s.HealthyVoters != 2 {
				return fmt.Errorf("%s", s.names())
			}
			return nil
		})
		if _, stderr, code := l.run(1, "member", "remove", "m1", "--data-dir", l.dataDir(1)); code == 0 || !strings.Contains(stderr, "leave") {
			t.Errorf("removing oneself: exit %d, %q", code, stderr)
		}
		l.mustRun(1, "member", "remove", "m3", "--data-dir", l.dataDir(1))
		s := l.status(1)
		if len(s.Members) != 2 || s.HealthyVoters != 2 {
			t.Fatalf("after member remove: %s", s.names())
		}
		if !strings.Contains(strings.Join(s.Warnings, ";"), "even count") {
			t.Errorf("no warning about 2 voters: %v", s.Warnings)
		}
	})

	t.Run("losing etcd quorum: /livez stays ok, /readyz fails, both recover", func(t *testing.T) {
		// Two members left: without m2, m1's etcd has no quorum.
		m2.stop(syscall.SIGKILL, 10*time.Second)
		probe := func(path string) string {
			out, _ := exec.Command("ip", "netns", "exec", l.prefix+"c", "curl", "-sk", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", l.apiserver(1)+path).Output()
			return string(out)
		}
		eventually(t, time.Minute, "/readyz failing on m1", func() error {
			if code := probe("/readyz"); code != "500" {
				return fmt.Errorf("/readyz %s", code)
			}
			return nil
		})
		// Well past the apiserver's etcd health-check timeout.
		time.Sleep(5 * time.Second)
		if code := probe("/livez"); code != "200" {
			t.Errorf("/livez = %s while etcd has no quorum, want 200", code)
		}
		m2 = l.start(2, "start")
		m2.waitReady(2 * time.Minute)
		eventually(t, time.Minute, "/readyz ok on m1 again", func() error {
			if code := probe("/readyz"); code != "200" {
				return fmt.Errorf("/readyz %s", code)
			}
			return nil
		})
	})

	t.Run("reset of a running member leaves the cluster first", func(t *testing.T) {
		out := l.mustRun(2, "reset", "--yes", "--data-dir", l.dataDir(2))
		if !strings.Contains(out, "left the cluster") || !strings.Contains(out, "removed "+l.dataDir(2)) {
			t.Fatalf("reset output:\n%s", out)
		}
		assertAbsent(t, l.dataDir(2))
		if s := l.status(1); len(s.Members) != 1 || s.HealthyVoters != 1 {
			t.Fatalf("after reset of m2: %s", s.names())
		}
	})
}
