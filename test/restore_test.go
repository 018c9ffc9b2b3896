package test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRestore loses a whole 3-master cluster and rebuilds it from a
// snapshot on three other hosts, as the disaster-recovery issue asks:
// scheduled snapshots on every master with retention, bad archives and
// unsafe restores refused with nothing written, then every master killed,
// its host and data gone, a restore onto a new host with the same VIP and
// two joins; every object is back, Secrets decrypt, the old admin
// kubeconfig works through the VIP, a watch from before the disaster gets
// 410 Gone, and a token expired by then stays refused.
func TestRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several control planes")
	}
	l := newLab(t, 6)
	snapDir := func(i int) string { return filepath.Join(l.dir, fmt.Sprintf("snapshots-m%d", i)) }
	sched := func(i int) []string {
		return []string{"--snapshot-dir", snapDir(i), "--snapshot-interval", "10s", "--snapshot-retention", "2"}
	}
	m1 := l.start(1, "init", append(append([]string{}, vipInitFlags...), sched(1)...)...)
	m1.waitReady(2 * time.Minute)
	token := readToken(t, l.dataDir(1))
	m2 := l.start(2, "join", append([]string{"--token", token}, sched(2)...)...)
	m2.waitReady(4 * time.Minute)
	m3 := l.start(3, "join", append([]string{"--token", token}, sched(3)...)...)
	m3.waitReady(4 * time.Minute)

	// The workload: ConfigMaps and Secrets created in one kubectl call
	// each, through the VIP.
	const configMaps, secrets = 600, 120
	l.mustKubectlVIP(1, "create", "-f", writeObjects(t, l.dir, "configmaps.json", configMaps, func(i int) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": fmt.Sprintf("cm-%04d", i), "namespace": "default"},
			"data": map[string]string{"v": fmt.Sprintf("value-%d", i)}}
	}))
	l.mustKubectlVIP(1, "create", "-f", writeObjects(t, l.dir, "secrets.json", secrets, func(i int) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": fmt.Sprintf("s-%04d", i), "namespace": "default"},
			"stringData": map[string]string{"password": fmt.Sprintf("secret-%d", i)}}
	}))
	rv := strings.TrimSpace(l.mustKubectlVIP(1, "get", "configmap", "cm-0000", "-o", "jsonpath={.metadata.resourceVersion}"))
	l.mustKubectlVIP(1, "patch", "configmap", "cm-0001", "-p", `{"data":{"v":"changed"}}`)
	// Before the disaster a watch from rv sees the change.
	if out := l.mustKubectlVIP(1, "get", "--raw", "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=2&resourceVersion="+rv); !strings.Contains(out, `"changed"`) {
		t.Fatalf("watch from %s before the disaster did not see the change:\n%.500s", rv, out)
	}
	expiring := strings.TrimSpace(l.mustRun(1, "token", "create", "--data-dir", l.dataDir(1), "--ttl", "3s"))
	oldAdmin := filepath.Join(l.dir, "old-admin.kubeconfig")
	if err := os.WriteFile(oldAdmin, mustRead(t, l.kubeconfig(1)), 0o600); err != nil {
		t.Fatal(err)
	}

	archive := filepath.Join(l.dir, "backup.snapshot")
	out := l.mustRun(2, "snapshot", "save", "--data-dir", l.dataDir(2), "--output", archive)
	if strings.TrimSpace(out) != archive {
		t.Fatalf("snapshot save printed %q, want the archive path", out)
	}
	time.Sleep(3 * time.Second) // the 3 s token expires

	t.Run("scheduled snapshots on every master, with retention", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			eventually(t, 40*time.Second, fmt.Sprintf("m%d keeps 2 scheduled snapshots", i), func() error {
				files, _ := filepath.Glob(filepath.Join(snapDir(i), "*.snapshot"))
				if len(files) != 2 {
					return fmt.Errorf("%d snapshots: %v", len(files), files)
				}
				return nil
			})
		}
		s := l.mustRun(1, "status", "--data-dir", l.dataDir(1))
		for _, name := range []string{"m1", "m2", "m3"} {
			if !strings.Contains(s, "snapshots of "+name+": last ") {
				t.Errorf("status does not show %s's last snapshot:\n%s", name, s)
			}
		}
	})

	t.Run("bad archives and unsafe restores are refused with nothing written", func(t *testing.T) {
		good := mustRead(t, archive)
		flipped := bytes.Clone(good)
		flipped[len(flipped)/2] ^= 0x10
		cases := []struct {
			name, want string
			data       []byte
		}{
			{"one byte flipped", "damaged or not a k8s-master snapshot", flipped},
			{"truncated", "truncated", good[:len(good)*2/3]},
			{"from a newer release", "runs the newer", restamp(t, good, "v9.9.9")},
			{"good, but the old VIP holder still answers", "is the old cluster still running", good},
		}
		for _, tc := range cases {
			path := filepath.Join(l.dir, "case.snapshot")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(l.dir, "refused")
			_, stderr, code := l.runOn("4", "restore", path, "--data-dir", dir, "--advertise-address", l.addr(4))
			if code == 0 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "nothing was written") {
				t.Errorf("%s: exit %d, stderr %q; want a refusal with %q that says nothing was written", tc.name, code, stderr, tc.want)
			}
			assertAbsent(t, dir)
		}
		// A data directory in use.
		busy := filepath.Join(l.dir, "busy")
		if err := os.MkdirAll(busy, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(busy, "notes.txt"), []byte("mine"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := l.runOn("4", "restore", archive, "--data-dir", busy, "--advertise-address", l.addr(4), "--force")
		if code == 0 || !strings.Contains(stderr, "not empty") {
			t.Errorf("restore into a non-empty directory: exit %d, %q", code, stderr)
		}
		if entries, _ := os.ReadDir(busy); len(entries) != 1 {
			t.Errorf("the non-empty data directory was changed: %d entries", len(entries))
		}
	})

	// The disaster: every master killed at once (whatever its scheduler
	// was writing), its host and data gone.
	for i, m := range []*master{m1, m2, m3} {
		m.stop(syscall.SIGKILL, 10*time.Second)
		for _, e := range l.snapshotList(i + 1) {
			if _, stderr, code := l.runOn("c", "snapshot", "verify", e); code != 0 {
				t.Errorf("m%d's listed snapshot %s does not verify after the crash: %s", i+1, e, stderr)
			}
		}
		if out, err := exec.Command("ip", "netns", "del", fmt.Sprintf("%sm%d", l.prefix, i+1)).CombinedOutput(); err != nil {
			t.Fatalf("delete host m%d: %v %s", i+1, err, out)
		}
		if err := os.RemoveAll(l.dataDir(i + 1)); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	// The new hosts keep their scheduled snapshots off this machine's
	// default directory.
	m4 := l.start(4, "restore", archive, "--snapshot-interval", "0")
	m4.waitReady(3 * time.Minute)
	ready := time.Since(start)
	newToken := readToken(t, l.dataDir(4))
	// The token lines follow the "ready in" line.
	eventually(t, 10*time.Second, "restore prints its join token", func() error {
		if !strings.Contains(m4.stdout.String(), newToken) {
			return fmt.Errorf("not in:\n%s", m4.stdout.String())
		}
		return nil
	})
	_, stderr, code := l.runOn("5", "join", "--data-dir", filepath.Join(l.dir, "expired"), "--advertise-address", l.addr(5), "--token", strings.Replace(expiring, l.addr(1), l.addr(4), 1))
	if code == 0 || !strings.Contains(stderr, "expired") {
		t.Errorf("a token expired before the snapshot: exit %d, %q", code, stderr)
	}
	m5 := l.start(5, "join", "--token", newToken, "--snapshot-interval", "0")
	m5.waitReady(4 * time.Minute)
	m6 := l.start(6, "join", "--token", newToken, "--snapshot-interval", "0")
	m6.waitReady(4 * time.Minute)
	voters := time.Since(start)
	t.Logf("restore: ready after %.1f s, 3 voters after %.1f s", ready.Seconds(), voters.Seconds())

	s := l.status(4)
	if s.Voters != 3 || s.HealthyVoters != 3 || len(s.Members) != 3 {
		t.Errorf("after the restore and two joins: %s", s.names())
	}
	for _, m := range s.Members {
		if m.Name != "m4" && m.Name != "m5" && m.Name != "m6" {
			t.Errorf("member %s of the lost cluster is still listed", m.Name)
		}
	}

	// Through the VIP with the kubeconfig from before the disaster.
	old := func(args ...string) string {
		t.Helper()
		out, err := l.kubectlWithConfig(oldAdmin, args...)
		if err != nil {
			t.Fatalf("kubectl %v with the old admin kubeconfig: %v\n%s", args, err, out)
		}
		return out
	}
	eventually(t, 30*time.Second, "the old admin kubeconfig works through the VIP", func() error {
		_, err := l.kubectlWithConfig(oldAdmin, "get", "--raw", "/readyz")
		return err
	})
	if n := strings.Count(old("get", "configmaps", "-o", "name"), "configmap/cm-"); n != configMaps {
		t.Errorf("%d of %d ConfigMaps back", n, configMaps)
	}
	if got := old("get", "configmap", "cm-0001", "-o", "jsonpath={.data.v}"); got != "changed" {
		t.Errorf("cm-0001 reads %q, want the change made before the snapshot", got)
	}
	var list struct {
		Items []struct {
			Metadata struct{ Name string }
			Data     map[string]string
		}
	}
	if err := json.Unmarshal([]byte(old("get", "secrets", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	decrypted := 0
	for _, it := range list.Items {
		if !strings.HasPrefix(it.Metadata.Name, "s-") {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(it.Metadata.Name, "s-"))
		if it.Data["password"] == b64(fmt.Sprintf("secret-%d", n)) {
			decrypted++
		}
	}
	if decrypted != secrets {
		t.Errorf("%d of %d Secrets back with their values", decrypted, secrets)
	}
	if out := old("get", "--raw", "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=2&resourceVersion="+rv); !strings.Contains(out, "410") || !strings.Contains(out, "too old resource version") {
		t.Errorf("a watch from %s (before the disaster) after the restore: want 410 Gone, got:\n%.500s", rv, out)
	}
}

// readToken reads the join token that init or restore kept.
func readToken(t *testing.T, dataDir string) string {
	t.Helper()
	return strings.TrimSpace(string(mustRead(t, filepath.Join(dataDir, "token"))))
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeObjects writes a kubectl List of n objects made by item.
func writeObjects(t *testing.T, dir, name string, n int, item func(int) map[string]any) string {
	t.Helper()
	items := make([]map[string]any, n)
	for i := range items {
		items[i] = item(i)
	}
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// restamp rewrites an archive as a newer k8s-master would have written
// it: the manifest's release changed, every checksum consistent, so only
// the version check can refuse it.
func restamp(t *testing.T, archive []byte, release string) []byte {
	t.Helper()
	body := archive[:len(archive)-65]
	tr := tar.NewReader(bytes.NewReader(body))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "manifest.json" {
			re := regexp.MustCompile(`"release":\s*"[^"]*"`)
			if !re.Match(data) {
				t.Fatalf("no release in the manifest:\n%s", data)
			}
			data = re.ReplaceAll(data, []byte(`"release": "`+release+`"`))
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(out.Bytes())
	out.WriteString(hex.EncodeToString(sum[:]) + "\n")
	return out.Bytes()
}

// snapshotList is the files `snapshot list` counts in master i's
// scheduled-snapshot directory.
func (l *lab) snapshotList(i int) []string {
	l.t.Helper()
	out, stderr, code := l.runOn("c", "snapshot", "list", "--dir", filepath.Join(l.dir, fmt.Sprintf("snapshots-m%d", i)))
	if code != 0 {
		l.t.Fatalf("snapshot list of m%d: exit %d %s%s", i, code, out, stderr)
	}
	var paths []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 && !strings.Contains(line, "(unreadable") {
			paths = append(paths, f[len(f)-1])
		}
	}
	return paths
}

// mustKubectlVIP runs kubectl with master i's admin kubeconfig (through
// the VIP) and fails the test on an error.
func (l *lab) mustKubectlVIP(i int, args ...string) string {
	l.t.Helper()
	out, err := l.kubectlWithConfig(l.kubeconfig(i), args...)
	if err != nil {
		l.t.Fatalf("kubectl %v via the VIP: %v\n%s", args, err, out)
	}
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
