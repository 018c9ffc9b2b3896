package addons

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/k8s-master/k8s-master/pkg/nodeagent"
	"github.com/k8s-master/k8s-master/pkg/rootca"
)

// NodeAgentDaemonSet is the node agent's DaemonSet in kube-system.
const NodeAgentDaemonSet = "k8s-master-node-agent"

// The node agent's DaemonSet, and where its pods find the published CAs.
const (
	nodeAgentName  = NodeAgentDaemonSet
	nodeAgentCADir = "/etc/k8s-master-ca"
)

// NodeAgentImage is the node agent's image: the k8s-master binary of the
// masters' release, from the image repository (`k8s-master node-agent
// image` writes it as an archive).
func (s Settings) NodeAgentImage() string {
	return nodeagent.ImageName(repo(s.ImageRepository), s.Release)
}

// nodeAgentObjects is a DaemonSet on every node: the kubelet's files are
// mounted at their own paths (the kubelet's -current.pem links name
// them), the node's PID and network namespaces let it restart the
// kubelet, and it needs no API credentials of its own (it asks for the
// kubelet's certificates with the kubelet's identity).
func nodeAgentObjects(s Settings) ([]object, error) {
	if s.Release == "" {
		return nil, fmt.Errorf("the node agent needs the masters' release (its image tag)")
	}
	ns, l := metav1.NamespaceSystem, labels(NodeAgent)
	sel := map[string]string{"k8s-app": nodeAgentName}
	podLabels := map[string]string{"k8s-app": nodeAgentName, AddonLabel: NodeAgent}
	hostDir := func(name, path string) *corev1ac.VolumeApplyConfiguration {
		return corev1ac.Volume().WithName(name).WithHostPath(corev1ac.HostPathVolumeSource().WithPath(path).WithType(corev1.HostPathDirectory))
	}
	container := corev1ac.Container().WithName("node-agent").
		WithImage(s.NodeAgentImage()).WithImagePullPolicy(corev1.PullIfNotPresent).
		WithCommand(nodeagent.BinaryPath, "node-agent", "run", "--node-name=$(NODE_NAME)", "--ca-dir="+nodeAgentCADir).
		WithEnv(corev1ac.EnvVar().WithName("NODE_NAME").
			WithValueFrom(corev1ac.EnvVarSource().WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath("spec.nodeName")))).
		// It writes the kubelet's files and signals the kubelet, a
		// process of the node with every capability.
		WithSecurityContext(corev1ac.SecurityContext().WithPrivileged(true)).
		WithResources(corev1ac.ResourceRequirements().WithRequests(corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("5m"), corev1.ResourceMemory: resource.MustParse("32Mi")})).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName("cluster-ca").WithMountPath(nodeAgentCADir).WithReadOnly(true),
			corev1ac.VolumeMount().WithName("etc-kubernetes").WithMountPath("/etc/kubernetes"),
			corev1ac.VolumeMount().WithName("var-lib-kubelet").WithMountPath("/var/lib/kubelet"))
	ds := appsv1ac.DaemonSet(nodeAgentName, ns).WithLabels(l).
		WithSpec(appsv1ac.DaemonSetSpec().
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(sel)).
			WithUpdateStrategy(appsv1ac.DaemonSetUpdateStrategy().WithType("RollingUpdate").
				WithRollingUpdate(appsv1ac.RollingUpdateDaemonSet().WithMaxUnavailable(intstr.FromString("10%")))).
			WithTemplate(corev1ac.PodTemplateSpec().WithLabels(podLabels).
				WithSpec(corev1ac.PodSpec().
					WithPriorityClassName("system-node-critical").
					WithAutomountServiceAccountToken(false).
					WithHostNetwork(true).
					WithHostPID(true).
					WithNodeSelector(map[string]string{"kubernetes.io/os": "linux"}).
					WithTolerations(corev1ac.Toleration().WithOperator(corev1.TolerationOpExists)).
					WithContainers(container).
					WithVolumes(
						corev1ac.Volume().WithName("cluster-ca").WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName(rootca.CAConfigMap)),
						hostDir("etc-kubernetes", "/etc/kubernetes"),
						hostDir("var-lib-kubelet", "/var/lib/kubelet"),
					))))
	return []object{daemonSet(ds)}, nil
}
