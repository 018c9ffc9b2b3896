package addons

import (
	"fmt"
	"net"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
)

// CoreDNS's objects, named as kubeadm names them (the Service is kube-dns,
// which other tools look for).
const (
	coreDNSName     = "coredns"
	coreDNSService  = "kube-dns"
	coreDNSRole     = "system:coredns"
	coreDNSReplicas = 2
)

// corefile answers the cluster domain and reverse lookups from the
// Kubernetes API and forwards the rest to the node's resolvers (the
// CoreDNS pods have dnsPolicy Default, so /etc/resolv.conf is the
// node's); the rest is kubeadm's Corefile.
func corefile(s Settings) string {
	return fmt.Sprintf(`.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes %[1]s in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success %[1]s
       disable denial %[1]s
    }
    loop
    reload
    loadbalance
}
`, s.ClusterDomain)
}

func coreDNSObjects(s Settings) ([]object, error) {
	if net.ParseIP(s.ClusterDNS) == nil {
		return nil, fmt.Errorf("CoreDNS needs the cluster DNS address, got %q", s.ClusterDNS)
	}
	if s.ClusterDomain == "" {
		return nil, fmt.Errorf("CoreDNS needs the cluster domain")
	}
	ns, l := metav1.NamespaceSystem, labels(CoreDNS)
	sel := map[string]string{"k8s-app": coreDNSService}
	podLabels := map[string]string{"k8s-app": coreDNSService, AddonLabel: CoreDNS}
	port := func(name string, p int32, proto corev1.Protocol) *corev1ac.ContainerPortApplyConfiguration {
		return corev1ac.ContainerPort().WithName(name).WithContainerPort(p).WithProtocol(proto)
	}
	probe := func(path string, p int) *corev1ac.ProbeApplyConfiguration {
		return corev1ac.Probe().WithHTTPGet(corev1ac.HTTPGetAction().WithPath(path).WithPort(intstr.FromInt(p)).WithScheme(corev1.URISchemeHTTP))
	}
	container := corev1ac.Container().WithName(coreDNSName).
		WithImage(s.CoreDNSImage()).WithImagePullPolicy(corev1.PullIfNotPresent).
		WithArgs("-conf", "/etc/coredns/Corefile").
		WithResources(corev1ac.ResourceRequirements().
			WithRequests(corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("70Mi")}).
			WithLimits(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("170Mi")})).
		WithVolumeMounts(corev1ac.VolumeMount().WithName("config-volume").WithMountPath("/etc/coredns").WithReadOnly(true)).
		WithPorts(port("dns", 53, corev1.ProtocolUDP), port("dns-tcp", 53, corev1.ProtocolTCP), port("metrics", 9153, corev1.ProtocolTCP)).
		WithLivenessProbe(probe("/health", 8080).WithInitialDelaySeconds(60).WithTimeoutSeconds(5).WithSuccessThreshold(1).WithFailureThreshold(5)).
		WithReadinessProbe(probe("/ready", 8181)).
		WithSecurityContext(corev1ac.SecurityContext().WithAllowPrivilegeEscalation(false).WithReadOnlyRootFilesystem(true).
			WithCapabilities(corev1ac.Capabilities().WithAdd("NET_BIND_SERVICE").WithDrop("ALL")))
	// Two replicas on two nodes where there are two: losing a node (or
	// draining it, which the PodDisruptionBudget paces) leaves one.
	spread := corev1ac.Affinity().WithPodAntiAffinity(corev1ac.PodAntiAffinity().
		WithPreferredDuringSchedulingIgnoredDuringExecution(corev1ac.WeightedPodAffinityTerm().WithWeight(100).
			WithPodAffinityTerm(corev1ac.PodAffinityTerm().WithTopologyKey("kubernetes.io/hostname").
				WithLabelSelector(metav1ac.LabelSelector().WithMatchLabels(sel)))))
	deploy := appsv1ac.Deployment(coreDNSName, ns).WithLabels(l).
		WithSpec(appsv1ac.DeploymentSpec().WithReplicas(coreDNSReplicas).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(sel)).
			WithStrategy(appsv1ac.DeploymentStrategy().WithType("RollingUpdate").
				WithRollingUpdate(appsv1ac.RollingUpdateDeployment().WithMaxUnavailable(intstr.FromInt32(1)))).
			WithTemplate(corev1ac.PodTemplateSpec().WithLabels(podLabels).
				WithSpec(corev1ac.PodSpec().
					WithPriorityClassName("system-cluster-critical").
					WithServiceAccountName(coreDNSName).
					// The node's resolvers, not CoreDNS itself.
					WithDNSPolicy(corev1.DNSDefault).
					WithNodeSelector(map[string]string{"kubernetes.io/os": "linux"}).
					WithTolerations(
						corev1ac.Toleration().WithKey("CriticalAddonsOnly").WithOperator(corev1.TolerationOpExists),
						corev1ac.Toleration().WithKey("node-role.kubernetes.io/control-plane").WithEffect(corev1.TaintEffectNoSchedule)).
					WithAffinity(spread).
					WithTopologySpreadConstraints(corev1ac.TopologySpreadConstraint().WithMaxSkew(1).
						WithTopologyKey("kubernetes.io/hostname").WithWhenUnsatisfiable(corev1.ScheduleAnyway).
						WithLabelSelector(metav1ac.LabelSelector().WithMatchLabels(sel))).
					WithContainers(container).
					WithVolumes(corev1ac.Volume().WithName("config-volume").WithConfigMap(corev1ac.ConfigMapVolumeSource().
						WithName(coreDNSName).WithItems(corev1ac.KeyToPath().WithKey("Corefile").WithPath("Corefile")))))))
	svcLabels := map[string]string{"k8s-app": coreDNSService, "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS", AddonLabel: CoreDNS, ManagedByKey: ManagedBy}
	svcPort := func(name string, p int32, proto corev1.Protocol) *corev1ac.ServicePortApplyConfiguration {
		return corev1ac.ServicePort().WithName(name).WithPort(p).WithTargetPort(intstr.FromInt32(p)).WithProtocol(proto)
	}
	svc := corev1ac.Service(coreDNSService, ns).WithLabels(svcLabels).
		WithAnnotations(map[string]string{"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}).
		WithSpec(corev1ac.ServiceSpec().WithClusterIP(s.ClusterDNS).WithSelector(sel).
			WithPorts(svcPort("dns", 53, corev1.ProtocolUDP), svcPort("dns-tcp", 53, corev1.ProtocolTCP), svcPort("metrics", 9153, corev1.ProtocolTCP)))
	rbacGroup := "rbac.authorization.k8s.io"
	return []object{
		serviceAccount(corev1ac.ServiceAccount(coreDNSName, ns).WithLabels(l)),
		clusterRole(rbacv1ac.ClusterRole(coreDNSRole).WithLabels(l).WithRules(
			rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("endpoints", "services", "pods", "namespaces").WithVerbs("list", "watch"),
			rbacv1ac.PolicyRule().WithAPIGroups("discovery.k8s.io").WithResources("endpointslices").WithVerbs("list", "watch"))),
		clusterRoleBinding(rbacv1ac.ClusterRoleBinding(coreDNSRole).WithLabels(l).
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacGroup).WithKind("ClusterRole").WithName(coreDNSRole)).
			WithSubjects(rbacv1ac.Subject().WithKind("ServiceAccount").WithNamespace(ns).WithName(coreDNSName))),
		configMap(corev1ac.ConfigMap(coreDNSName, ns).WithLabels(l).WithData(map[string]string{"Corefile": corefile(s)})),
		deployment(deploy),
		service(svc),
		podDisruptionBudget(policyv1ac.PodDisruptionBudget(coreDNSName, ns).WithLabels(l).
			WithSpec(policyv1ac.PodDisruptionBudgetSpec().WithMaxUnavailable(intstr.FromInt32(1)).
				WithSelector(metav1ac.LabelSelector().WithMatchLabels(sel)))),
	}, nil
}
