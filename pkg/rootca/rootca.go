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
	"crypto/x509"
	"encoding/pem"
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
// certificates (the trust bundle); SigningCAKey, the CA the
// controller-manager signs kubelet certificates with now; ServingCAKey,
// the CA servers' certificates come from now (the one that signed the
// apiserver's): during a rotation's window still the old one, since
// clients such as the apiserver's kubelet client reload a CA file only
// every 5 minutes, and the new one from phase serve on.
const (
	CAConfigMap  = "k8s-master-ca"
	BundleKey    = "ca-bundle.crt"
	SigningCAKey = "signing-ca.crt"
	ServingCAKey = "serving-ca.crt"
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
	// ServingCert is the apiserver's serving certificate: the CA of the
	// bundle that signed it is the serving CA.
	ServingCert string
}

// published is what CAConfigMap holds.
type published struct {
	bundle, signing, serving []byte
}

func (p published) equal(o published) bool {
	return bytes.Equal(p.bundle, o.bundle) && bytes.Equal(p.signing, o.signing) && bytes.Equal(p.serving, o.serving)
}

func (f Files) read() (published, error) {
	var p published
	var err error
	if p.bundle, err = os.ReadFile(f.Bundle); err != nil {
		return p, fmt.Errorf("read the CA bundle: %w", err)
	}
	if p.signing, err = os.ReadFile(f.SigningCA); err != nil {
		return p, fmt.Errorf("read the signing CA: %w", err)
	}
	if len(bytes.TrimSpace(p.bundle)) == 0 || len(bytes.TrimSpace(p.signing)) == 0 {
		return p, fmt.Errorf("%s or %s is empty", f.Bundle, f.SigningCA)
	}
	leafPEM, err := os.ReadFile(f.ServingCert)
	if err != nil {
		return p, fmt.Errorf("read the apiserver's certificate: %w", err)
	}
	if p.serving, err = issuerIn(leafPEM, p.bundle); err != nil {
		return p, fmt.Errorf("the apiserver's certificate %s: %w", f.ServingCert, err)
	}
	return p, nil
}

// issuerIn returns, PEM, the certificate of bundle that signed the first
// certificate of leafPEM.
func issuerIn(leafPEM, bundle []byte) ([]byte, error) {
	b, _ := pem.Decode(leafPEM)
	if b == nil {
		return nil, fmt.Errorf("no certificate in it")
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, err
	}
	for c, rest := pem.Decode(bundle); c != nil; c, rest = pem.Decode(rest) {
		ca, err := x509.ParseCertificate(c.Bytes)
		if err != nil {
			continue
		}
		if leaf.CheckSignatureFrom(ca) == nil {
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Bytes}), nil
		}
	}
	return nil, fmt.Errorf("signed by no CA of the bundle")
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

	applied   published
	appliedAt time.Time
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
	pub, err := p.files.read()
	if err != nil {
		return err
	}
	bundle := pub.bundle
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
	if pub.equal(p.applied) && time.Since(p.appliedAt) < reapplyPeriod {
		return nil
	}
	if err := applyCAConfigMap(ctx, p.cs, pub); err != nil {
		return err
	}
	p.applied, p.appliedAt = pub, time.Now()
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

// applyCAConfigMap publishes the CAs for the node agent.
func applyCAConfigMap(ctx context.Context, cs kubernetes.Interface, pub published) error {
	ac := corev1ac.ConfigMap(CAConfigMap, metav1.NamespaceSystem).
		WithLabels(map[string]string{"app.kubernetes.io/managed-by": "k8s-master"}).
		WithData(map[string]string{BundleKey: string(pub.bundle), SigningCAKey: string(pub.signing), ServingCAKey: string(pub.serving)})
	if _, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Apply(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return fmt.Errorf("publish ConfigMap kube-system/%s: %w", CAConfigMap, err)
	}
	return nil
}
