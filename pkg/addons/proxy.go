package addons

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
)

// kube-proxy's objects, named as kubeadm names them so that tools and
// runbooks written for kubeadm clusters find them.
const (
	kubeProxyName = "kube-proxy"
	// kubeProxyBinding binds the built-in system:node-proxier role.
	kubeProxyBinding = "k8s-master:node-proxier"
	kubeProxyConfDir = "/var/lib/kube-proxy"
)

// kubeProxyConfig is the KubeProxyConfiguration: iptables mode, the pod
// range (kube-proxy masquerades traffic from outside it to Services) and
// the apiserver through kubeconfig.conf. Conntrack settings are
// kube-proxy's defaults, as kubeadm leaves them.
func kubeProxyConfig(s Settings) string {
	doc := `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 0.0.0.0
clientConnection:
  kubeconfig: ` + kubeProxyConfDir + `/kubeconfig.conf
mode: iptables
`
	if s.PodCIDR != "" {
		doc += "clusterCIDR: " + s.PodCIDR + "\n"
	}
	return doc
}

// kubeProxyKubeconfig reaches the apiserver at its stable address with
// the pod's service account token: kube-proxy makes the kubernetes
// Service work, so it cannot use it.
func kubeProxyKubeconfig(s Settings) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
    server: %s
  name: default
contexts:
- context:
    cluster: default
    namespace: default
    user: default
  name: default
current-context: default
users:
- name: default
  user:
    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
`, s.APIServer)
}

func kubeProxyObjects(s Settings) ([]object, error) {
	if s.APIServer == "" {
		return nil, fmt.Errorf("kube-proxy needs the apiserver's address")
	}
	ns, l := metav1.NamespaceSystem, labels(KubeProxy)
	data := map[string]string{"config.conf": kubeProxyConfig(s), "kubeconfig.conf": kubeProxyKubeconfig(s)}
	sel := map[string]string{"k8s-app": kubeProxyName}
	podLabels := map[string]string{"k8s-app": kubeProxyName, AddonLabel: KubeProxy}
	hostPath := func(name, path string, t corev1.HostPathType) *corev1ac.VolumeApplyConfiguration {
		return corev1ac.Volume().WithName(name).WithHostPath(corev1ac.HostPathVolumeSource().WithPath(path).WithType(t))
	}
	container := corev1ac.Container().WithName(kubeProxyName).
		WithImage(s.KubeProxyImage()).WithImagePullPolicy(corev1.PullIfNotPresent).
		WithCommand("/usr/local/bin/kube-proxy", "--config="+kubeProxyConfDir+"/config.conf", "--hostname-override=$(NODE_NAME)").
		WithEnv(corev1ac.EnvVar().WithName("NODE_NAME").
			WithValueFrom(corev1ac.EnvVarSource().WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath("spec.nodeName")))).
		// It writes iptables rules and conntrack entries of the node.
		WithSecurityContext(corev1ac.SecurityContext().WithPrivileged(true)).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName(kubeProxyName).WithMountPath(kubeProxyConfDir),
			corev1ac.VolumeMount().WithName("xtables-lock").WithMountPath("/run/xtables.lock"),
			corev1ac.VolumeMount().WithName("lib-modules").WithMountPath("/lib/modules").WithReadOnly(true))
	ds := appsv1ac.DaemonSet(kubeProxyName, ns).WithLabels(l).
		WithSpec(appsv1ac.DaemonSetSpec().
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(sel)).
			WithUpdateStrategy(appsv1ac.DaemonSetUpdateStrategy().WithType("RollingUpdate").
				WithRollingUpdate(appsv1ac.RollingUpdateDaemonSet().WithMaxUnavailable(intstr.FromInt32(1)))).
			// kube-proxy reads its configuration once: a changed one
			// rolls the pods through this annotation.
			WithTemplate(corev1ac.PodTemplateSpec().WithLabels(podLabels).
				WithAnnotations(map[string]string{ConfigHashAnnotation: dataHash(data)}).
				WithSpec(corev1ac.PodSpec().
					WithPriorityClassName("system-node-critical").
					WithServiceAccountName(kubeProxyName).
					WithHostNetwork(true).
					WithNodeSelector(map[string]string{"kubernetes.io/os": "linux"}).
					// Every node, tainted or not, needs its Service rules.
					WithTolerations(corev1ac.Toleration().WithOperator(corev1.TolerationOpExists)).
					WithContainers(container).
					WithVolumes(
						corev1ac.Volume().WithName(kubeProxyName).WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName(kubeProxyName)),
						hostPath("xtables-lock", "/run/xtables.lock", corev1.HostPathFileOrCreate),
						hostPath("lib-modules", "/lib/modules", ""),
					))))
	rbacGroup := "rbac.authorization.k8s.io"
	return []object{
		serviceAccount(corev1ac.ServiceAccount(kubeProxyName, ns).WithLabels(l)),
		clusterRoleBinding(rbacv1ac.ClusterRoleBinding(kubeProxyBinding).WithLabels(l).
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacGroup).WithKind("ClusterRole").WithName("system:node-proxier")).
			WithSubjects(rbacv1ac.Subject().WithKind("ServiceAccount").WithNamespace(ns).WithName(kubeProxyName))),
		configMap(corev1ac.ConfigMap(kubeProxyName, ns).WithLabels(l).WithData(data)),
		daemonSet(ds),
	}, nil
}
