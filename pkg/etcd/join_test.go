package etcd

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/k8s-master/k8s-master/internal/testkit"
)

// A learner catches up from a snapshot of the leader; when the leader
// applied the learner's first publish before it made that snapshot, etcd
// alone would leave the learner unready for its whole request timeout
// (6 s here). Each of several joins must be ready well before that.
func TestJoiningMemberReadyBeforePublishTimeout(t *testing.T) {
	c1 := newMember(t, t.TempDir())
	_, cli := runReady(t, c1, "join-timing")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	restarts := 0
	for i := 0; i < 4; i++ {
		// Some history, so the leader snapshots and compacts its log
		// like a real cluster's (every 100 applied entries).
		for j := 0; j < 150; j++ {
			if _, err := cli.Put(ctx, "/filler", "x"); err != nil {
				t.Fatal(err)
			}
		}
		c2 := *c1
		c2.DataDir, c2.Name = t.TempDir(), "joiner"
		ports := testkit.FreePorts(t, 3)
		c2.EtcdClientPort, c2.EtcdPeerPort, c2.EtcdMetricsPort = ports[0], ports[1], ports[2]
		if err := os.CopyFS(c2.Layout().PKIDir(), os.DirFS(c1.Layout().PKIDir())); err != nil {
			t.Fatal(err)
		}
		issueLeaves(t, &c2)
		add, err := cli.MemberAddAsLearner(ctx, []string{c2.EtcdPeerURL()})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		m2, err := Launch(&c2, Options{ClusterState: "existing", InitialCluster: c1.Name + "=" + c1.EtcdPeerURL() + "," + c2.Name + "=" + c2.EtcdPeerURL(), Joining: true})
		if err != nil {
			t.Fatal(err)
		}
		err = m2.WaitReady(ctx)
		took := time.Since(start)
		restarts += m2.restarts
		m2.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.MemberRemove(ctx, add.Member.ID); err != nil {
			t.Fatal(err)
		}
		t.Logf("join %d: ready after %.2f s, %d restart(s)", i+1, took.Seconds(), m2.restarts)
		if took > 3*time.Second {
			t.Errorf("join %d: the learner was ready only after %.2f s; etcd's publish timeout is 6 s", i+1, took.Seconds())
		}
	}
	t.Logf("%d of 4 joins needed the restart", restarts)
}
