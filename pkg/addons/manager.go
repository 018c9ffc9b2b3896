package addons

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/k8s-master/k8s-master/pkg/leaderlease"
)

// LeaseName is the add-on manager's leader lease in kube-system: one
// master applies at a time.
const LeaseName = "k8s-master-addons"

// StateConfigMap in kube-system records what the manager applied last:
// the hash of the settings and objects, and which add-ons it applied. A
// leader whose hash differs applies again; one whose hash matches leaves
// the objects alone, so edits made since survive leader changes.
const StateConfigMap = "k8s-master-addons"

// The keys of StateConfigMap.
const (
	stateHash     = "hash"
	stateApplied  = "applied"
	stateDisabled = "disabled"
)

// How often the leader looks at the state again (someone deleted it, or
// another master with other settings applied in between), and how soon it
// retries after a failure.
// spreadPeriod is how often it checks that CoreDNS's replicas are not all
// on one node.
var (
	resyncPeriod = 5 * time.Minute
	retryPeriod  = 5 * time.Second
	spreadPeriod = 15 * time.Second
	// gatePeriod is how often a held-back manager asks again (the last
	// master of an upgrade may not be the leader).
	gatePeriod = 10 * time.Second
)

// Run campaigns for the lease and, while it holds it, keeps the add-ons
// in step with s, until ctx ends; it releases the lease on the way out.
// identity names this master in the lease.
//
// gate (nil: none) says why the add-ons must not be applied now: while the
// masters run different Kubernetes versions or releases (a rolling upgrade), a
// kube-proxy of the new version could talk to an older apiserver, which
// the version skew policy forbids, and a leader change would flip the
// images back and forth. As kubeadm upgrades the add-ons once every
// control plane node is upgraded, the manager waits for the last master.
func Run(ctx context.Context, cs kubernetes.Interface, identity string, s Settings, gate func(context.Context) error) error {
	if _, err := Hash(s); err != nil {
		return fmt.Errorf("add-on settings: %w", err)
	}
	return leaderlease.Run(ctx, cs, LeaseName, identity, func(ctx context.Context) { keep(ctx, cs, s, gate) })
}

// keep reconciles now and at every resync, retrying failures, and
// spreads CoreDNS's replicas every spreadPeriod, until ctx ends.
func keep(ctx context.Context, cs kubernetes.Interface, s Settings, gate func(context.Context) error) {
	if s.Enabled(CoreDNS) {
		go func() {
			for {
				if _, err := spreadCoreDNS(ctx, cs); err != nil && ctx.Err() == nil {
					klog.ErrorS(err, "add-on manager: spreading CoreDNS over nodes failed; trying again later")
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(spreadPeriod):
				}
			}
		}()
	}
	held := ""
	for {
		wait := resyncPeriod
		if gate != nil {
			if err := gate(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				if err.Error() != held {
					klog.InfoS("add-on manager waits before applying the add-ons", "reason", err.Error())
					held = err.Error()
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(gatePeriod):
				}
				continue
			}
			held = ""
		}
		if changed, err := Reconcile(ctx, cs, s); err != nil {
			if ctx.Err() != nil {
				return
			}
			klog.ErrorS(err, "add-on manager: applying the add-ons failed; retrying", "in", retryPeriod)
			wait = retryPeriod
		} else if changed {
			klog.InfoS("add-on manager applied the add-ons", "kubeProxy", s.Enabled(KubeProxy), "coreDNS", s.Enabled(CoreDNS),
				"kubeProxyImage", s.KubeProxyImage(), "coreDNSImage", s.CoreDNSImage(), "clusterDNS", s.ClusterDNS)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Reconcile applies the enabled add-ons and deletes the disabled ones it
// had applied, unless the state in the cluster says that is done for
// these settings already; changed tells whether it did anything.
func Reconcile(ctx context.Context, cs kubernetes.Interface, s Settings) (changed bool, err error) {
	hash, err := Hash(s)
	if err != nil {
		return false, err
	}
	state, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, StateConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		state = nil
	case err != nil:
		return false, fmt.Errorf("read the add-on state (ConfigMap kube-system/%s): %w", StateConfigMap, err)
	}
	if state != nil && state.Data[stateHash] == hash {
		// Applied already; only a workload deleted by hand since (the
		// way to be rid of one is --disable-addon) is applied again.
		missing, err := workloadMissing(ctx, cs, s)
		if err != nil || !missing {
			return false, err
		}
	}
	var applied, disabled []string
	for _, name := range Names {
		if s.Enabled(name) {
			if err := apply(ctx, cs, name, s); err != nil {
				return true, err
			}
			applied = append(applied, name)
			continue
		}
		disabled = append(disabled, name)
		if err := remove(ctx, cs, name, s); err != nil {
			return true, err
		}
	}
	ac := corev1ac.ConfigMap(StateConfigMap, metav1.NamespaceSystem).WithLabels(map[string]string{ManagedByKey: ManagedBy}).
		WithData(map[string]string{stateHash: hash, stateApplied: strings.Join(applied, ","), stateDisabled: strings.Join(disabled, ",")})
	if _, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Apply(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return true, fmt.Errorf("record the add-on state (ConfigMap kube-system/%s): %w", StateConfigMap, err)
	}
	return true, nil
}

// workloadMissing tells whether the DaemonSet or Deployment of an enabled
// add-on is gone.
func workloadMissing(ctx context.Context, cs kubernetes.Interface, s Settings) (bool, error) {
	for _, name := range Names {
		if !s.Enabled(name) {
			continue
		}
		objs, err := objectsOf(name, s)
		if err != nil {
			return false, err
		}
		for _, o := range objs {
			if o.kind != "DaemonSet" && o.kind != "Deployment" {
				continue
			}
			_, err := o.get(ctx, cs)
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			if err != nil {
				return false, fmt.Errorf("read %s: %w", o, err)
			}
		}
	}
	return false, nil
}

// apply applies the add-on's objects. Force takes over the fields the
// manager sets from whoever changed them since; the fields it does not
// set stay as they are.
func apply(ctx context.Context, cs kubernetes.Interface, name string, s Settings) error {
	objs, err := objectsOf(name, s)
	if err != nil {
		return err
	}
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	for _, o := range objs {
		if err := o.apply(ctx, cs, opts); err != nil {
			return fmt.Errorf("apply %s of add-on %s: %w", o, name, err)
		}
	}
	return nil
}

// remove deletes the objects of a disabled add-on that the manager made
// (they carry its label); an object of the same name made by someone else
// (the cluster's own DNS, say) stays.
func remove(ctx context.Context, cs kubernetes.Interface, name string, s Settings) error {
	objs, err := objectsOf(name, s)
	if err != nil {
		return err
	}
	// Workloads first, so that their pods stop before their RBAC goes.
	slices.Reverse(objs)
	var errs []error
	bg := metav1.DeletePropagationBackground
	for _, o := range objs {
		cur, err := o.get(ctx, cs)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s of disabled add-on %s: %w", o, name, err))
			continue
		}
		if cur.GetLabels()[AddonLabel] != name {
			klog.InfoS("add-on manager leaves an object of a disabled add-on it did not make", "addon", name, "object", o.String())
			continue
		}
		err = o.del(ctx, cs, metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: ptr(cur.GetUID())}})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s of disabled add-on %s: %w", o, name, err))
			continue
		}
		klog.InfoS("add-on manager deleted an object of a disabled add-on", "addon", name, "object", o.String())
	}
	return errors.Join(errs...)
}

func ptr[T any](v T) *T { return &v }
