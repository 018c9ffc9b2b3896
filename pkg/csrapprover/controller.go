package csrapprover

import (
	"context"
	"errors"
	"fmt"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/k8s-master/k8s-master/pkg/leaderlease"
)

// LeaseName is the approver's leader lease in kube-system: one master
// decides at a time.
const LeaseName = "k8s-master-csr-approver"

// Component is how the approver names itself in Events.
const Component = "k8s-master-csr-approver"

// nodeWait is how long a CSR whose Node does not exist yet waits before it
// is denied: a kubelet asks for its serving certificate once it has posted
// its Node's addresses, but the approver may see the CSR first.
const nodeWait = 30 * time.Second

// approver decides kubelet-serving CSRs.
type approver struct {
	cs       kubernetes.Interface
	recorder record.EventRecorder
	queue    workqueue.TypedRateLimitingInterface[string]
	// firstSeen is when a CSR waiting for its Node was first looked at.
	firstSeen map[string]time.Time
}

// Run campaigns for the lease and decides CSRs while it holds it, until
// ctx ends; it releases the lease on the way out. identity names this
// master in the lease.
func Run(ctx context.Context, cs kubernetes.Interface, identity string) error {
	return leaderlease.Run(ctx, cs, LeaseName, identity, func(ctx context.Context) { run(ctx, cs) })
}

// run decides CSRs until ctx ends.
func run(ctx context.Context, cs kubernetes.Interface) {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	a := &approver{
		cs:        cs,
		recorder:  broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component}),
		queue:     workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		firstSeen: map[string]time.Time{},
	}
	defer a.queue.ShutDown()
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Certificates().V1().CertificateSigningRequests().Informer()
	enqueue := func(obj any) {
		if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok && Relevant(csr) {
			a.queue.Add(csr.Name)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }}); err != nil {
		klog.ErrorS(err, "CSR approver: cannot watch CSRs")
		return
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return
	}
	go func() { <-ctx.Done(); a.queue.ShutDown() }()
	for {
		name, quit := a.queue.Get()
		if quit {
			return
		}
		retry, err := a.decide(ctx, name)
		switch {
		case err != nil:
			klog.ErrorS(err, "CSR approver", "csr", name)
			a.queue.AddRateLimited(name)
		case retry > 0:
			a.queue.AddAfter(name, retry)
		default:
			a.queue.Forget(name)
		}
		a.queue.Done(name)
	}
}

// decide approves or denies one CSR. retry > 0 asks to look again then
// (its Node does not exist yet).
func (a *approver) decide(ctx context.Context, name string) (retry time.Duration, err error) {
	csr, err := a.cs.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		delete(a.firstSeen, name)
		return 0, nil
	}
	if err != nil || !Relevant(csr) {
		return 0, err
	}
	var node *corev1.Node
	if n := NodeName(csr); n != "" {
		node, err = a.cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			node, err = nil, nil
			first, seen := a.firstSeen[name]
			if !seen {
				first = time.Now()
				a.firstSeen[name] = first
			}
			if time.Since(first) < nodeWait {
				return time.Second, nil
			}
		}
		if err != nil {
			return 0, err
		}
	}
	delete(a.firstSeen, name)
	verdict := Check(csr, node)
	cond := certificatesv1.CertificateSigningRequestCondition{
		Status: corev1.ConditionTrue, LastUpdateTime: metav1.Now(),
	}
	if verdict == nil {
		cond.Type, cond.Reason = certificatesv1.CertificateApproved, "AutoApproved"
		cond.Message = "k8s-master: the node asks for its own names and addresses"
	} else {
		cond.Type, cond.Reason = certificatesv1.CertificateDenied, "NotTheNodesOwn"
		cond.Message = "k8s-master: " + verdict.Error()
	}
	csr.Status.Conditions = append(csr.Status.Conditions, cond)
	_, err = a.cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, name, csr, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		return 0, errors.New("the CSR changed while being decided; deciding again")
	}
	if err != nil {
		return 0, fmt.Errorf("record the decision on CSR %s: %w", name, err)
	}
	if verdict != nil {
		a.recorder.Eventf(csr, corev1.EventTypeWarning, "CSRDenied", "kubelet serving certificate for %s denied: %v", csr.Spec.Username, verdict)
		klog.InfoS("CSR approver denied a kubelet serving certificate", "csr", name, "requester", csr.Spec.Username, "reason", verdict)
	} else {
		klog.V(2).InfoS("CSR approver approved a kubelet serving certificate", "csr", name, "requester", csr.Spec.Username)
	}
	return 0, nil
}
