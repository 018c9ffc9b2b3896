package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/poll"
)

// etcdReloadLock is held by the master whose etcd member restarts to load
// a new trust bundle: one member at a time, so the cluster keeps its
// quorum. Its lease outlives the restart (the holder's client loses its
// member for a second or two) and frees the lock if the holder dies.
const (
	etcdReloadLock     = "/k8s-master/etcd-trust-reload"
	etcdReloadLockTTL  = 30 // seconds
	etcdReloadWait     = 10 * time.Minute
	etcdHealthyTimeout = 2 * time.Minute
)

// reloadEtcdTrust restarts the local etcd member in place when the etcd
// trust bundle on disk is not the one it runs with: etcd builds its trust
// pools once, at start, so a new etcd CA is trusted (and the old one
// dropped) only by a restarted member. Every master does this in turn,
// under etcdReloadLock, once every member is healthy; a master holding the
// VIP hands it over first, so that clients of the VIP never wait for the
// restart. The process, its other parts and their connections stay.
func (m *Master) reloadEtcdTrust(ctx context.Context, logf func(string, ...any)) error {
	if !m.etcd.TrustStale() {
		return nil
	}
	cli := m.etcdClient
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(etcdReloadLockTTL))
	if err != nil {
		return fmt.Errorf("etcd trust reload: open a session for its lock: %w", err)
	}
	defer sess.Close()
	lock := concurrency.NewMutex(sess, etcdReloadLock)
	lctx, cancel := context.WithTimeout(ctx, etcdReloadWait)
	err = lock.Lock(lctx)
	cancel()
	if err != nil {
		return fmt.Errorf("etcd trust reload: wait for the other masters' member restarts: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = lock.Unlock(uctx)
	}()
	if !m.etcd.TrustStale() {
		return nil
	}
	// Quorum without this member: every member healthy (a member that
	// another master restarted a moment ago has caught up).
	var members []etcd.MemberStatus
	var sick []string
	err = poll.Until(ctx, 500*time.Millisecond, etcdHealthyTimeout, func(ctx context.Context) (bool, error) {
		ms, err := etcd.Members(ctx, cli)
		if err != nil {
			sick = []string{err.Error()}
			return false, nil
		}
		members, sick = ms, nil
		for _, mm := range ms {
			if !mm.Healthy {
				sick = append(sick, fmt.Sprintf("%s (%s)", mm.Name, mm.Error))
			}
		}
		return len(sick) == 0, nil
	}, func() error {
		return fmt.Errorf("etcd trust reload: not every etcd member is healthy after %s (%s): a restart of this one could cost the quorum; start or repair them, the rotation retries", etcdHealthyTimeout, strings.Join(sick, ", "))
	})
	if err != nil {
		return err
	}
	if len(members) > 1 && m.vip != nil && m.vip.mgr != nil {
		m.etcdReloading.Store(true)
		defer m.etcdReloading.Store(false)
		if err := poll.Until(ctx, 50*time.Millisecond, 15*time.Second, func(context.Context) (bool, error) {
			return !m.vip.mgr.Holding(), nil
		}, func() error {
			return fmt.Errorf("etcd trust reload: this master still holds VIP %s after 15 s", m.cfg.VIP)
		}); err != nil {
			return err
		}
	}
	logf("restarting the etcd member in place to load the new etcd trust bundle")
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := m.etcd.Reload(rctx); err != nil {
		return err
	}
	logf("etcd member restarted with the new trust bundle in %.1f s", time.Since(start).Seconds())
	return nil
}
