// Package leaderlease runs a part of k8s-master on one master at a time:
// the holder of a Lease in kube-system, as the controller-manager and the
// scheduler elect theirs.
package leaderlease

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// Run campaigns for the lease name and runs lead while it holds it (lead's
// context ends when the lease is lost), until ctx ends; it releases the
// lease on the way out. identity names this master in the lease.
func Run(ctx context.Context, cs kubernetes.Interface, name, identity string, lead func(ctx context.Context)) error {
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, metav1.NamespaceSystem, name,
		cs.CoreV1(), cs.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: identity})
	if err != nil {
		return fmt.Errorf("lease %s: %w", name, err)
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, ReleaseOnCancel: true, Name: name,
		// The controller-manager's defaults.
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: lead,
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("lease %s: %w", name, err)
	}
	// Campaign again after a lost lease (an apiserver or etcd hiccup);
	// upstream's components exit there, which here would end the master.
	for ctx.Err() == nil {
		le.Run(ctx)
		if ctx.Err() == nil {
			klog.InfoS("lost the lease; campaigning again", "lease", name)
		}
	}
	return nil
}
