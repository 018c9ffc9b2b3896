package addons

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"
)

// object is one object of an add-on: its apply configuration, and how to
// apply, read and delete it.
type object struct {
	kind, namespace, name string
	// config is the apply configuration (what Hash reads).
	config any
	apply  func(ctx context.Context, cs kubernetes.Interface, o metav1.ApplyOptions) error
	get    func(ctx context.Context, cs kubernetes.Interface) (metav1.Object, error)
	del    func(ctx context.Context, cs kubernetes.Interface, o metav1.DeleteOptions) error
}

func (o object) String() string {
	if o.namespace == "" {
		return o.kind + " " + o.name
	}
	return fmt.Sprintf("%s %s/%s", o.kind, o.namespace, o.name)
}

// objectsOf are the add-on's objects in the order they are applied (what
// others refer to first).
func objectsOf(name string, s Settings) ([]object, error) {
	switch name {
	case KubeProxy:
		return kubeProxyObjects(s)
	case CoreDNS:
		return coreDNSObjects(s)
	case NodeAgent:
		return nodeAgentObjects(s)
	}
	return nil, CheckName(name)
}

// labels are on every object of the add-on (and its pods' templates keep
// their own selector labels).
func labels(addon string) map[string]string {
	return map[string]string{AddonLabel: addon, ManagedByKey: ManagedBy}
}

// client is what a typed client of one kind offers (a
// ServiceAccountInterface, a DaemonSetInterface, ...): AC is its apply
// configuration, T its object.
type client[AC any, T metav1.Object] interface {
	Apply(ctx context.Context, ac *AC, o metav1.ApplyOptions) (T, error)
	Get(ctx context.Context, name string, o metav1.GetOptions) (T, error)
	Delete(ctx context.Context, name string, o metav1.DeleteOptions) error
}

// typed makes the object of an apply configuration of one kind; c picks
// its typed client.
func typed[AC any, T metav1.Object](kind, ns, name string, ac *AC, c func(kubernetes.Interface) client[AC, T]) object {
	return object{kind: kind, namespace: ns, name: name, config: ac,
		apply: func(ctx context.Context, cs kubernetes.Interface, o metav1.ApplyOptions) error {
			_, err := c(cs).Apply(ctx, ac, o)
			return err
		},
		get: func(ctx context.Context, cs kubernetes.Interface) (metav1.Object, error) {
			return c(cs).Get(ctx, name, metav1.GetOptions{})
		},
		del: func(ctx context.Context, cs kubernetes.Interface, o metav1.DeleteOptions) error {
			return c(cs).Delete(ctx, name, o)
		}}
}

func serviceAccount(ac *corev1ac.ServiceAccountApplyConfiguration) object {
	ns := *ac.Namespace
	return typed("ServiceAccount", ns, *ac.Name, ac, func(cs kubernetes.Interface) client[corev1ac.ServiceAccountApplyConfiguration, *corev1.ServiceAccount] {
		return cs.CoreV1().ServiceAccounts(ns)
	})
}

func configMap(ac *corev1ac.ConfigMapApplyConfiguration) object {
	ns := *ac.Namespace
	return typed("ConfigMap", ns, *ac.Name, ac, func(cs kubernetes.Interface) client[corev1ac.ConfigMapApplyConfiguration, *corev1.ConfigMap] {
		return cs.CoreV1().ConfigMaps(ns)
	})
}

func clusterRole(ac *rbacv1ac.ClusterRoleApplyConfiguration) object {
	return typed("ClusterRole", "", *ac.Name, ac, func(cs kubernetes.Interface) client[rbacv1ac.ClusterRoleApplyConfiguration, *rbacv1.ClusterRole] {
		return cs.RbacV1().ClusterRoles()
	})
}

func clusterRoleBinding(ac *rbacv1ac.ClusterRoleBindingApplyConfiguration) object {
	return typed("ClusterRoleBinding", "", *ac.Name, ac, func(cs kubernetes.Interface) client[rbacv1ac.ClusterRoleBindingApplyConfiguration, *rbacv1.ClusterRoleBinding] {
		return cs.RbacV1().ClusterRoleBindings()
	})
}

func daemonSet(ac *appsv1ac.DaemonSetApplyConfiguration) object {
	ns := *ac.Namespace
	return typed("DaemonSet", ns, *ac.Name, ac, func(cs kubernetes.Interface) client[appsv1ac.DaemonSetApplyConfiguration, *appsv1.DaemonSet] {
		return cs.AppsV1().DaemonSets(ns)
	})
}

func podDisruptionBudget(ac *policyv1ac.PodDisruptionBudgetApplyConfiguration) object {
	ns := *ac.Namespace
	return typed("PodDisruptionBudget", ns, *ac.Name, ac, func(cs kubernetes.Interface) client[policyv1ac.PodDisruptionBudgetApplyConfiguration, *policyv1.PodDisruptionBudget] {
		return cs.PolicyV1().PodDisruptionBudgets(ns)
	})
}

func service(ac *corev1ac.ServiceApplyConfiguration) object {
	ns, n := *ac.Namespace, *ac.Name
	o := typed("Service", ns, n, ac, func(cs kubernetes.Interface) client[corev1ac.ServiceApplyConfiguration, *corev1.Service] {
		return cs.CoreV1().Services(ns)
	})
	apply := o.apply
	o.apply = func(ctx context.Context, cs kubernetes.Interface, opts metav1.ApplyOptions) error {
		// A Service's cluster IP cannot change in place: a new
		// --cluster-dns replaces the Service.
		cur, err := cs.CoreV1().Services(ns).Get(ctx, n, metav1.GetOptions{})
		if err == nil && ac.Spec != nil && ac.Spec.ClusterIP != nil && cur.Spec.ClusterIP != *ac.Spec.ClusterIP {
			if err := cs.CoreV1().Services(ns).Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("replace Service %s/%s for its new address %s: %w", ns, n, *ac.Spec.ClusterIP, err)
			}
		}
		return apply(ctx, cs, opts)
	}
	return o
}

func deployment(ac *appsv1ac.DeploymentApplyConfiguration) object {
	ns, n := *ac.Namespace, *ac.Name
	o := typed("Deployment", ns, n, ac, func(cs kubernetes.Interface) client[appsv1ac.DeploymentApplyConfiguration, *appsv1.Deployment] {
		return cs.AppsV1().Deployments(ns)
	})
	o.apply = func(ctx context.Context, cs kubernetes.Interface, opts metav1.ApplyOptions) error {
		// A Deployment scaled by someone else (kubectl scale, an
		// autoscaler) keeps its size: the manager applies the replicas
		// it finds, so it never shrinks a scaled CoreDNS.
		apply := ac
		cur, err := cs.AppsV1().Deployments(ns).Get(ctx, n, metav1.GetOptions{})
		if err == nil && cur.Spec.Replicas != nil && ac.Spec != nil {
			c, spec := *ac, *ac.Spec
			spec.Replicas = cur.Spec.Replicas
			c.Spec = &spec
			apply = &c
		}
		_, err = cs.AppsV1().Deployments(ns).Apply(ctx, apply, opts)
		return err
	}
	return o
}
