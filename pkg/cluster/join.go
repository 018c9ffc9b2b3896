package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/datadir"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/logging"
)

// JoinOptions are the joiner's extra inputs.
type JoinOptions struct {
	Options
	Token string
	// Force skips the cluster's quorum guard.
	Force bool
}

// Join makes this machine a master of the cluster behind the token: the
// cluster adds it as an etcd learner and hands over the shared secrets; it
// makes its own certificates, starts its member, is promoted to voter once
// caught up, then starts its apiserver, controller-manager and scheduler.
// A data directory that already holds a master resumes it instead.
func Join(ctx context.Context, c *config.Config, o JoinOptions) (*Master, error) {
	tok, err := join.ParseToken(o.Token)
	if err != nil {
		return nil, err
	}
	p := newProgress(o.Out)
	ds, err := datadir.Inspect(c)
	if err != nil {
		return nil, err
	}
	if ds.State != nil {
		if err := checkConflicts(&ds.State.Config, c, o.Explicit, "start"); err != nil {
			return nil, err
		}
		p.printf("%s already holds a master of cluster %s; resuming it (no token needed: k8s-master start --data-dir %s)", c.DataDir, ds.State.ClusterID, c.DataDir)
		return start(ctx, c, ds.State, o.Options, p)
	}
	p.printf("k8s-master: joining the cluster at %s as %s (%s)", strings.Join(tok.Endpoints, ", "), c.Name, c.AdvertiseAddress)
	fresh, err := prepareFreshDir(c, ds, p)
	if err != nil {
		return nil, err
	}
	// Until the member is promoted and the state recorded, a failure takes
	// back what this join did: the learner and the files.
	succeeded := false
	var m *Master
	var resp *join.Response
	var secretsWritten bool
	defer func() {
		if succeeded {
			return
		}
		if m != nil {
			m.stopAll(5 * time.Second)
		}
		if resp != nil && !resp.Resume && secretsWritten {
			if err := removeLearner(c, resp); err != nil {
				p.printf("warning: could not remove this master's etcd learner (%v); a join service removes it after 90 s", err)
			}
		}
		fresh.undo(p)
	}()
	logs, err := logging.Setup(c.LogFile, c.LogVerbosity)
	if err != nil {
		return nil, err
	}
	m = &Master{cfg: c, logs: logs, lock: fresh.lock}

	if err := p.step("admitted by the cluster (etcd learner added)", func() error {
		resp, err = join.Send(ctx, tok, join.Request{Name: c.Name, PeerURL: c.EtcdPeerURL(), Force: o.Force}, func(msg string) {
			p.printf("  waiting: %s", msg)
		})
		return err
	}); err != nil {
		return nil, err
	}
	c.ServiceCIDR, c.PodCIDR, c.ClusterDomain = resp.ServiceCIDR, resp.PodCIDR, resp.ClusterDomain
	c.VIP, c.VIPLeaseTTL = resp.VIP, resp.VIPLeaseTTL
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("the cluster's settings do not validate here: %w", err)
	}
	if c.VIP != "" {
		if err := p.step(vipStep(c, false), func() error {
			m.vipAddr, err = openVIP(c, false)
			return err
		}); err != nil {
			return nil, err
		}
	} else if err := c.CheckIfaceHasVIP(); err != nil {
		return nil, err
	}

	if err := p.step("cluster secrets and own certificates", func() error {
		if err := writeSharedFiles(c.DataDir, resp.Files); err != nil {
			return err
		}
		secretsWritten = true
		return m.ensureCredentials(true)
	}); err != nil {
		return nil, err
	}

	if err := p.step("etcd member caught up and promoted", func() error {
		m.etcd, err = etcd.Launch(c, etcd.Options{ClusterState: "existing", InitialCluster: resp.InitialCluster, Logger: logs.Zap, ReadyTimeout: 5 * time.Minute})
		if err != nil {
			return err
		}
		if err := m.etcd.WaitReady(ctx); err != nil {
			return err
		}
		return promote(ctx, c, resp)
	}); err != nil {
		return nil, err
	}
	if m.etcd.ClusterID() != resp.EtcdClusterID {
		return nil, fmt.Errorf("the local etcd member joined etcd cluster %s, but the cluster reports %s", m.etcd.ClusterID(), resp.EtcdClusterID)
	}
	m.state = &config.State{ClusterID: resp.ClusterID, CreatedAt: time.Now().UTC(), CAPin: resp.CAPin, EtcdClusterID: resp.EtcdClusterID, Config: *c}
	if err := config.WriteState(c.StatePath(), m.state); err != nil {
		return nil, err
	}
	if err := fresh.commit(); err != nil {
		return nil, err
	}
	succeeded = true

	m.launchControlPlane(ctx)
	if err := m.finishControlPlane(ctx, o.Options, p); err != nil {
		m.stopAll(10 * time.Second)
		return nil, fmt.Errorf("%w; this master is a member now: fix the cause and run k8s-master start --data-dir %s", err, c.DataDir)
	}
	m.printReady(p)
	return m, nil
}

// writeSharedFiles stores the cluster's secrets: keys 0600, certificates
// and the service-account public key 0644.
func writeSharedFiles(dir string, files map[string][]byte) error {
	for _, rel := range join.SharedFiles {
		data, ok := files[rel]
		if !ok {
			return fmt.Errorf("the cluster did not send %s", rel)
		}
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		mode := os.FileMode(0o600)
		if strings.HasSuffix(rel, ".crt") || strings.HasSuffix(rel, ".pub") {
			mode = 0o644
		}
		if err := fsutil.WriteFileAtomic(path, data, mode); err != nil {
			return err
		}
	}
	return nil
}

func memberID(resp *join.Response) (uint64, error) {
	return strconv.ParseUint(resp.MemberID, 16, 64)
}

// promote turns the local learner into a voter once etcd says it has
// caught up with the leader.
func promote(ctx context.Context, c *config.Config, resp *join.Response) error {
	id, err := memberID(resp)
	if err != nil {
		return err
	}
	cli, err := etcd.NewClient(c, append([]string{c.LocalEtcdURL()}, resp.EtcdEndpoints...)...)
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.MemberPromote(pctx, id)
		cancel()
		if err == nil || strings.Contains(err.Error(), "not a learner") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the learner was not promoted within 5 minutes: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// removeLearner takes back the member a failed join added.
func removeLearner(c *config.Config, resp *join.Response) error {
	id, err := memberID(resp)
	if err != nil {
		return err
	}
	if len(resp.EtcdEndpoints) == 0 {
		return errors.New("no other member to ask")
	}
	cli, err := etcd.NewClient(c, resp.EtcdEndpoints...)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = cli.MemberRemove(ctx, id)
	if err != nil && strings.Contains(err.Error(), "member not found") {
		return nil
	}
	return err
}
