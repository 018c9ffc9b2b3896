package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/k8s-master/k8s-master/pkg/component"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/csrapprover"
	"github.com/k8s-master/k8s-master/pkg/datadir"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/secretskey"
	"github.com/k8s-master/k8s-master/pkg/snapshot"
	"github.com/k8s-master/k8s-master/pkg/upgrade"
	"github.com/k8s-master/k8s-master/pkg/version"
	"github.com/k8s-master/k8s-master/pkg/vip"
)

// RestoreOptions are restore's extra inputs.
type RestoreOptions struct {
	Options
	// Archive is the snapshot file.
	Archive string
	// Force skips the check that no other host answers for the VIP.
	Force bool
}

// staleKeys are what the snapshot's masters left in etcd that would
// mislead the restored cluster: their registrations and snapshot records
// (status would list masters that are gone), the VIP holder's election key
// (a dead holder blocks the campaign until its lease runs out), their
// reports of the encryption configuration they ran (a new master of the
// same name would seem to run it before it reported), the
// apiserver endpoint leases (the kubernetes Service would point at the old
// masters), and the controller-manager's, scheduler's and CSR approver's
// leader leases (a new leader would wait out the old one's term).
var staleKeys = []struct {
	key    string
	prefix bool
}{
	{"/k8s-master/masters/", true},
	{snapshot.RecordPrefix, true},
	{vip.ElectionKey, true},
	{secretskey.LoadedPrefix, true},
	{"/registry/masterleases/", true},
	{"/registry/leases/kube-system/kube-controller-manager", false},
	{"/registry/leases/kube-system/kube-scheduler", false},
	{"/registry/leases/kube-system/" + csrapprover.LeaseName, false},
}

// Restore makes this machine the first master of a cluster rebuilt from a
// snapshot: the cluster's identity (CAs, keys, encryption key, ID,
// settings) from the archive, this machine's own name, addresses and leaf
// certificates, and a new one-member etcd cluster holding every key of the
// snapshot with its revision bumped and compacted. Other masters join it
// with the token it prints. Everything it refuses (a damaged archive, a
// newer release's, a data directory in use, a VIP still answered) is
// refused before anything is written.
func Restore(ctx context.Context, c *config.Config, o RestoreOptions) (*Master, error) {
	return restoreWith(ctx, c, o, realParts)
}

func restoreWith(ctx context.Context, c *config.Config, o RestoreOptions, parts builder) (*Master, error) {
	m := newMaster(c, o.Options, parts)
	m.run.Printf("k8s-master: checking snapshot %s", o.Archive)
	arc, err := snapshot.Load(o.Archive)
	if err != nil {
		return nil, fmt.Errorf("%w (nothing was written)", err)
	}
	man, old := arc.Manifest, arc.State
	if err := upgrade.CheckRestore(version.Local(), man.Versions); err != nil {
		return nil, err
	}
	ds, err := datadir.Inspect(c)
	if err != nil {
		return nil, err
	}
	if ds.State != nil {
		return nil, fmt.Errorf("data directory %s already holds a master of cluster %s; nothing was written: %w", c.DataDir, ds.State.ClusterID,
			config.Hint("restore into an empty {data-dir}, or run k8s-master reset first if that master is to go"))
	}
	if err := checkForeign(c, ds); err != nil {
		return nil, fmt.Errorf("%w (nothing was written)", err)
	}
	restoredSettings(c, &old.Config, o.Explicit)
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("the snapshot's settings do not validate on this machine (nothing was written): %w", err)
	}
	m.run.Printf("k8s-master: restoring cluster %s from the snapshot %s took at %s (etcd revision %d, masters %s) as %s (%s)",
		old.ClusterID, man.Master, man.Created.Local().Format(time.RFC3339), man.Revision, strings.Join(man.Members, ", "), c.Name, c.AdvertiseAddress)

	var steps []component.Step
	if c.VIP != "" {
		// The VIP probe is what tells a lost cluster from a living one: a
		// restore next to a cluster that still serves would make two.
		step := m.vipCheckStep(!o.Force)
		do := step.Do
		step.Do = func(ctx context.Context, r *component.Runner) error {
			if err := do(ctx, r); err != nil {
				return fmt.Errorf("%w; nothing was written (is the old cluster still running? restore only when it is gone; --force skips this check)", err)
			}
			return nil
		}
		steps = append(steps, step)
	}
	steps = append(steps, freshDirSteps(c, ds)...)
	steps = append(steps,
		m.logStep(),
		m.controlStep(),
		component.Step{Name: "cluster identity from the snapshot, own certificates", Do: func(context.Context, *component.Runner) error {
			if err := writeSharedFiles(c.DataDir, arc.Files); err != nil {
				return err
			}
			pin, err := pki.ReadPin(c)
			if err != nil {
				return err
			}
			if pin != old.CAPin {
				return fmt.Errorf("the snapshot's CA does not match its recorded pin (%s, recorded %s); use another snapshot", pin, old.CAPin)
			}
			_, err = writeCredentials(c, false)
			return err
		}},
		component.Step{Name: fmt.Sprintf("etcd data restored (revision %d moved on by %d, older ones compacted)", man.Revision, etcd.RestoreRevisionBump), Do: func(context.Context, *component.Runner) error {
			db := filepath.Join(c.DataDir, ".restore-etcd.db")
			defer os.Remove(db)
			if err := arc.ExtractEtcd(db); err != nil {
				return err
			}
			_, err := etcd.Restore(c, db, newClusterID(), m.logs.Zap)
			return err
		}},
		component.Step{Name: "etcd member ready", Do: func(ctx context.Context, r *component.Runner) error {
			m.etcd = parts.etcd(c, etcd.Options{ClusterState: "existing", Logger: m.logs.Zap})
			if err := r.Start(ctx, m.etcd); err != nil {
				return err
			}
			if err := r.Ready(ctx, m.etcd); err != nil {
				return err
			}
			// Before the apiserver reads any of it.
			return forgetOldMasters(ctx, c, parts, r)
		}},
		component.Step{Do: func(ctx context.Context, r *component.Runner) error {
			if err := m.startControlPlane(ctx, r); err != nil {
				return err
			}
			m.state = &config.State{ClusterID: old.ClusterID, CreatedAt: time.Now().UTC(), CAPin: old.CAPin, EtcdClusterID: m.etcd.ClusterID(), Config: *c}
			if err := config.WriteState(c.Layout().State(), m.state); err != nil {
				return err
			}
			return commitFreshDir(r, c)
		}},
		m.servingStepsLater(),
		component.Step{Name: "join token for the other masters", Do: func(ctx context.Context, _ *component.Runner) error {
			if err := m.createFirstToken(ctx); err != nil {
				return hinted{fmt.Errorf("%w; the cluster was restored: run k8s-master start --data-dir %s, then k8s-master token create", err, c.DataDir)}
			}
			return nil
		}},
	)
	return m.runPlan(ctx, steps, "the cluster was restored, fix the cause and run: k8s-master start --data-dir "+c.DataDir)
}

// restoredSettings gives c the snapshot's cluster-wide settings (ranges,
// domain, VIP lease) while this machine keeps its own name, addresses and
// ports; the VIP is the snapshot's unless --vip moves it.
func restoredSettings(c, archived *config.Config, explicit map[string]bool) {
	c.ServiceCIDR, c.PodCIDR, c.ClusterDomain = archived.ServiceCIDR, archived.PodCIDR, archived.ClusterDomain
	if !explicit["vip"] {
		c.VIP = archived.VIP
	}
	if !explicit["vip-lease-ttl"] {
		c.VIPLeaseTTL = archived.VIPLeaseTTL
	}
}

// forgetOldMasters deletes staleKeys from the restored member.
func forgetOldMasters(ctx context.Context, c *config.Config, parts builder, r *component.Runner) error {
	cli, err := parts.connect(c)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	removed := 0
	for _, k := range staleKeys {
		var opts []clientv3.OpOption
		if k.prefix {
			opts = append(opts, clientv3.WithPrefix())
		}
		resp, err := cli.Delete(ctx, k.key, opts...)
		if err != nil {
			return fmt.Errorf("forget the snapshot's masters (%s): %w", k.key, err)
		}
		removed += int(resp.Deleted)
	}
	r.Printf("  forgot the snapshot's masters (%d keys: registrations, VIP holder, leader leases)", removed)
	return nil
}
