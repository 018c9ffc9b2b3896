package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8s-master/k8s-master/pkg/cluster"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/preflight"
	"github.com/k8s-master/k8s-master/pkg/vip"
)

// Library packages name settings by key; the command line prints what it
// printed when they wrote flag names themselves. Each want is the old
// message, byte for byte.
func TestFlagMessageOfLibraryErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	owner := ""
	if pid, comm, ok := preflight.PortOwner(busy); ok {
		owner = fmt.Sprintf(" by pid %d (%s)", pid, comm)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	// A data directory recorded with other settings than those given.
	recorded := config.Default()
	recorded.DataDir = t.TempDir()
	recorded.Name = "m1"
	recorded.AdvertiseAddress = "127.0.0.1"
	if err := config.WriteState(recorded.Layout().State(), &config.State{Version: config.StateVersion, ClusterID: "c1", CAPin: "sha256:00", Config: recorded}); err != nil {
		t.Fatal(err)
	}
	given := recorded
	given.Name = "m2"
	given.APIServerPort = 7443

	members := []etcd.MemberStatus{
		{ID: 1, Name: "a", Healthy: true},
		{ID: 2, Name: "b"},
		{ID: 3, Name: "c"},
	}

	cases := []struct {
		name string
		err  func() error
		want string
	}{
		{"port in use", func() error {
			return preflight.CheckPorts([]preflight.Port{{Name: "apiserver", Setting: "apiserver-port", Host: "127.0.0.1", Port: busy}})
		}, fmt.Sprintf("port %d (apiserver) on 127.0.0.1 is in use%s; stop that process or pass --apiserver-port", busy, owner)},
		{"data directory is a file", func() error {
			_, err := preflight.CheckDataDir(file)
			return err
		}, fmt.Sprintf("data directory %s exists but is not a directory; pass another --data-dir", file)},
		{"settings contradict the data directory", func() error {
			_, err := cluster.Start(context.Background(), &given, cluster.Options{Explicit: map[string]bool{"name": true, "apiserver-port": true}})
			return err
		}, fmt.Sprintf(`data directory %s already holds a cluster whose settings differ: --name is "m2" here but "m1" in the cluster; --apiserver-port is "7443" here but "6443" in the cluster; drop those flags (use a new --data-dir for a new cluster)`, recorded.DataDir)},
		{"quorum guard, remove", func() error { return etcd.CheckRemove(members, 1) },
			"removing a leaves 0 healthy of 2 voters, fewer than the quorum of 2; bring the other masters back first, or pass --force"},
		{"quorum guard, add", func() error { return etcd.CheckAdd(members) },
			"voting member(s) b, c unhealthy; adding a master now could cost the cluster its quorum. Bring them back or remove them (k8s-master member remove), or pass --force"},
		{"VIP not unicast", func() error {
			_, err := vip.Open(nil, "eth0", net.IPv4zero, time.Minute)
			return err
		}, "--vip 0.0.0.0 must be a unicast address"},
		{"token TTL", func() error {
			_, _, err := join.NewStore(nil, nil).CreateToken(context.Background(), nil, "", 0, 0, "")
			return err
		}, "--ttl must be positive, got 0s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			if err == nil {
				t.Fatal("no error")
			}
			if got := flagMessage(err); got != tc.want {
				t.Errorf("command line says\n%s\nwant\n%s", got, tc.want)
			}
			if strings.Contains(err.Error(), "--") {
				t.Errorf("the library's own wording names a flag: %v", err)
			}
			if len(config.SettingErrors(err)) == 0 {
				t.Errorf("no setting named: %v", err)
			}
		})
	}
}
