// Package rootca keeps the kube-root-ca.crt ConfigMap of every namespace,
// from which pods learn what verifies the apiserver, equal to the cluster
// CA bundle on the masters' disks, also while that bundle changes under a
// running master (a CA rotation), and publishes the bundle and the CA that
// signs kubelet certificates for the node agent (ConfigMap
// kube-system/k8s-master-ca).
//
// Upstream's controller-manager reads its --root-ca-file once, when it
// starts: after a CA rotation, pods would keep trusting only the old CA
// until a master restarted, and lose the apiserver once its serving
// certificate moved to the new one. So the controller-manager's own
// publisher is disabled (see controlplane) and this one runs upstream's
// controller again, on the leader, whenever the bundle changes.
package rootca

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/controller/certificates/rootcacertpublisher"

	"github.com/k8s-master/k8s-master/pkg/leaderlease"
)

// LeaseName is the publisher's leader lease in kube-system.
const LeaseName = "k8s-master-root-ca-publisher"

// CAConfigMap in kube-system holds what the node agent writes onto
// workers: BundleKey, the CAs that verify the apiserver and sign client
// certificates (the trust bundle), and SigningCAKey, the CA the
// controller-manager signs kubelet certificates with now.
const (
	CAConfigMap  = "k8s-master-ca"
	BundleKey    = "ca-bundle.crt"
	SigningCAKey = "signing-ca.crt"
)

// FieldManager owns what the publisher applies to CAConfigMap.
const FieldManager = "k8s-master-root-ca"

// pollPeriod is how often the files are read: a rotation phase changes
// them once, and pods, the node agent and the kubelets then have minutes
// (the rotation's window) to follow.
var pollPeriod = 2 * time.Second

// Files are the paths the publisher reads.
type Files struct {
	// Bundle is the cluster CA trust bundle (pki/ca-bundle.crt).
	Bundle string
	// SigningCA is the CA certificate the controller-manager signs with
	// (pki/ca.crt).
	SigningCA string
}

func (f Files) read() (bundle, signing []byte, err error) {
	if bundle, err = os.ReadFile(f.Bundle); err != nil {
		return nil, nil, fmt.Errorf("read the CA bundle: %w", err)
	}
	if signing, err = os.ReadFile(f.SigningCA); err != nil {
		return nil, nil, fmt.Errorf("read the signing CA: %w", err)
	}
	if len(bytes.TrimSpace(bundle)) == 0 || len(bytes.TrimSpace(signing)) == 0 {
		return nil, nil, fmt.Errorf("%s or %s is empty", f.Bundle, f.SigningCA)
	}
	return bundle, signing, nil
}

// Run campaigns for the lease and, while it holds it, publishes the
// files until ctx ends.
func Run(ctx context.Context, cs kubernetes.Interface, identity string, f Files) error {
	return leaderlease.Run(ctx, cs, LeaseName, identity, func(ctx context.Context) { publish(ctx, cs, f) })
}

// reapplyPeriod is how often CAConfigMap is applied again unchanged (in
// case someone deleted it).
var reapplyPeriod = time.Minute

// publisher is the leader's state: the bundle upstream's controller runs
// with, and what CAConfigMap holds.
type publisher struct {
	cs    kubernetes.Interface
	files Files

	bundle []byte
	stop   context.CancelFunc
	done   chan struct{}

	appliedBundle, appliedSigning []byte
	appliedAt                     time.Time
}

// publish syncs every pollPeriod until ctx ends, then stops the
// controller.
func publish(ctx context.Context, cs kubernetes.Interface, f Files) {
	p := &publisher{cs: cs, files: f}
	defer p.stopController()
	lastErr := ""
	for {
		err := p.sync(ctx)
		switch {
		case err != nil && ctx.Err() == nil && err.Error() != lastErr:
			klog.ErrorS(err, "root CA publisher: retrying", "in", pollPeriod)
			lastErr = err.Error()
		case err == nil:
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pollPeriod):
		}
	}
}

// sync reads the files, runs the controller for the bundle read and
// applies CAConfigMap when it differs from what was applied.
func (p *publisher) sync(ctx context.Context) error {
	bundle, signing, err := p.files.read()
	if err != nil {
		return err
	}
	if p.done == nil || !bytes.Equal(bundle, p.bundle) {
		p.stopController()
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		if err := startPublisher(cctx, p.cs, bundle, done); err != nil {
			cancel()
			return err
		}
		p.bundle, p.stop, p.done = bundle, cancel, done
		klog.InfoS("publishing the cluster CA bundle to every namespace's kube-root-ca.crt",
			"certificates", bytes.Count(bundle, []byte("BEGIN CERTIFICATE")))
	}
	if bytes.Equal(bundle, p.appliedBundle) && bytes.Equal(signing, p.appliedSigning) && time.Since(p.appliedAt) < reapplyPeriod {
		return nil
	}
	if err := applyCAConfigMap(ctx, p.cs, bundle, signing); err != nil {
		return err
	}
	p.appliedBundle, p.appliedSigning, p.appliedAt = bundle, signing, time.Now()
	return nil
}

// stopController stops the running controller and waits for it.
func (p *publisher) stopController() {
	if p.done == nil {
		return
	}
	p.stop()
	<-p.done
	p.done = nil
}

// startPublisher runs upstream's controller for bundle with informers of
// its own (namespaces, and only the kube-root-ca.crt ConfigMaps) until
// ctx ends; done closes when it has stopped.
func startPublisher(ctx context.Context, cs kubernetes.Interface, bundle []byte, done chan struct{}) error {
	nsFactory := informers.NewSharedInformerFactory(cs, 0)
	cmFactory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", rootcacertpublisher.RootCACertConfigMapName).String()
	}))
	p, err := rootcacertpublisher.NewPublisher(cmFactory.Core().V1().ConfigMaps(), nsFactory.Core().V1().Namespaces(), cs, bundle)
	if err != nil {
		return fmt.Errorf("root CA publisher: %w", err)
	}
	nsFactory.Start(ctx.Done())
	cmFactory.Start(ctx.Done())
	go func() {
		defer close(done)
		p.Run(ctx, 1)
		nsFactory.Shutdown()
		cmFactory.Shutdown()
	}()
	return nil
}

// applyCAConfigMap publishes the bundle and the signing CA for the node
// agent.
func applyCAConfigMap(ctx context.Context, cs kubernetes.Interface, bundle, signing []byte) error {
	ac := corev1ac.ConfigMap(CAConfigMap, metav1.NamespaceSystem).
		WithLabels(map[string]string{"app.kubernetes.io/managed-by": "k8s-master"}).
		WithData(map[string]string{BundleKey: string(bundle), SigningCAKey: string(signing)})
	if _, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Apply(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return fmt.Errorf("publish ConfigMap kube-system/%s: %w", CAConfigMap, err)
	}
	return nil
}
