package nodebootstrap

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
)

// Settings are what the objects for workers say about the cluster.
type Settings struct {
	// VIPEndpoint is host:port of the apiserver on the VIP, "" without one.
	VIPEndpoint string
	// OwnEndpoint is host:port of this master's apiserver.
	OwnEndpoint string
	// MasterEndpoints are host:port of every registered master's apiserver
	// (this one included).
	MasterEndpoints []string
	CAPEM           []byte
	// KubernetesVersion is the control plane's ("v1.37.2").
	KubernetesVersion string
	ServiceCIDR       string
	PodCIDR           string
	ClusterDomain     string
	// ClusterDNS is the address kubelets send DNS queries to; "" is the
	// default, ClusterDNS(ServiceCIDR).
	ClusterDNS string
}

// fieldManager owns the fields k8s-master applies; the bootstrap signer's
// jws-kubeconfig-* keys in cluster-info stay its own.
const fieldManager = "k8s-master"

// ChooseEndpoint is the apiserver endpoint workers are told about: the VIP
// when there is one. Without a VIP, the endpoint cluster-info already
// names as long as it is still a registered master's, so that masters of a
// VIP-less cluster do not flip it to themselves at each start; otherwise
// (first start, or that master was removed) this master's.
func ChooseEndpoint(s Settings, existing string) string {
	if s.VIPEndpoint != "" {
		return s.VIPEndpoint
	}
	if existing != "" && slices.Contains(s.MasterEndpoints, existing) {
		return existing
	}
	return s.OwnEndpoint
}

// ClusterDNS is the cluster DNS Service's address: the 10th address of
// the service range, as kubeadm has it.
func ClusterDNS(serviceCIDR string) (net.IP, error) {
	_, n, err := net.ParseCIDR(serviceCIDR)
	if err != nil {
		return nil, fmt.Errorf("service range %q: %w", serviceCIDR, err)
	}
	ip := slices.Clone(n.IP)
	carry := 10
	for i := len(ip) - 1; i >= 0 && carry > 0; i-- {
		v := int(ip[i]) + carry
		ip[i], carry = byte(v), v>>8
	}
	if !n.Contains(ip) {
		return nil, fmt.Errorf("service range %s is too small to hold the cluster DNS address (its 10th)", serviceCIDR)
	}
	return ip, nil
}

// Apply creates or updates, idempotently, everything kubelets and
// `kubeadm join` read from the cluster, and returns the endpoint it
// published. cs must be allowed to write RBAC (the admin's credentials).
func Apply(ctx context.Context, cs kubernetes.Interface, s Settings) (string, error) {
	existing, err := ClusterInfoEndpoint(ctx, cs)
	if err != nil {
		return "", err
	}
	endpoint := ChooseEndpoint(s, existing)
	cm, err := configMaps(s, endpoint)
	if err != nil {
		return "", err
	}
	// kube-public is made by the apiserver's system namespaces controller,
	// which may not have run yet on a brand new cluster.
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: metav1.NamespacePublic}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create namespace kube-public: %w", err)
	}
	opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	for _, c := range cm {
		if _, err := cs.CoreV1().ConfigMaps(*c.Namespace).Apply(ctx, c, opts); err != nil {
			return "", fmt.Errorf("apply ConfigMap %s/%s: %w", *c.Namespace, *c.Name, err)
		}
	}
	rb := cs.RbacV1()
	for _, r := range roles() {
		if _, err := rb.Roles(*r.Namespace).Apply(ctx, r, opts); err != nil {
			return "", fmt.Errorf("apply Role %s/%s: %w", *r.Namespace, *r.Name, err)
		}
	}
	for _, b := range roleBindings() {
		if _, err := rb.RoleBindings(*b.Namespace).Apply(ctx, b, opts); err != nil {
			return "", fmt.Errorf("apply RoleBinding %s/%s: %w", *b.Namespace, *b.Name, err)
		}
	}
	for _, r := range clusterRoles() {
		if _, err := rb.ClusterRoles().Apply(ctx, r, opts); err != nil {
			return "", fmt.Errorf("apply ClusterRole %s: %w", *r.Name, err)
		}
	}
	for _, b := range clusterRoleBindings() {
		if _, err := rb.ClusterRoleBindings().Apply(ctx, b, opts); err != nil {
			return "", fmt.Errorf("apply ClusterRoleBinding %s: %w", *b.Name, err)
		}
	}
	return endpoint, nil
}

// ClusterInfoEndpoint is host:port of the server cluster-info names now,
// "" when there is none.
func ClusterInfoEndpoint(ctx context.Context, cs kubernetes.Interface) (string, error) {
	cm, err := cs.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read kube-public/cluster-info: %w", err)
	}
	cfg, err := clientcmd.Load([]byte(cm.Data[bootstrapapi.KubeConfigKey]))
	if err != nil {
		return "", nil // unreadable: replaced below
	}
	if c := cfg.Clusters[""]; c != nil {
		return hostPort(c.Server), nil
	}
	return "", nil
}

// ClusterInfoServer is what cluster-info names as the server for endpoint.
func ClusterInfoServer(endpoint string) string { return "https://" + endpoint }

func hostPort(server string) string {
	hp, _ := strings.CutPrefix(server, "https://")
	return hp
}

// configMaps are cluster-info (kube-public, read anonymously before the
// worker trusts anything; the token's signature and the CA pin make it
// trusted), kubeadm-config and kubelet-config (kube-system, read by
// `kubeadm join` with the token).
func configMaps(s Settings, endpoint string) ([]*corev1ac.ConfigMapApplyConfiguration, error) {
	info, err := clusterInfoKubeconfig(ClusterInfoServer(endpoint), s.CAPEM)
	if err != nil {
		return nil, err
	}
	dns := net.ParseIP(s.ClusterDNS)
	if dns == nil {
		if dns, err = ClusterDNS(s.ServiceCIDR); err != nil {
			return nil, err
		}
	}
	return []*corev1ac.ConfigMapApplyConfiguration{
		corev1ac.ConfigMap(bootstrapapi.ConfigMapClusterInfo, metav1.NamespacePublic).
			WithData(map[string]string{bootstrapapi.KubeConfigKey: string(info)}),
		corev1ac.ConfigMap(KubeadmConfigMap, metav1.NamespaceSystem).
			WithData(map[string]string{"ClusterConfiguration": clusterConfiguration(s, endpoint)}),
		corev1ac.ConfigMap(KubeletConfigMap, metav1.NamespaceSystem).
			WithData(map[string]string{"kubelet": kubeletConfiguration(s, dns)}),
	}, nil
}

// The ConfigMaps `kubeadm join` reads, in kube-system.
const (
	KubeadmConfigMap = "kubeadm-config"
	KubeletConfigMap = "kubelet-config"
)

func clusterConfiguration(s Settings, endpoint string) string {
	doc := fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: %s
kubernetesVersion: %s
controlPlaneEndpoint: %s
certificatesDir: /etc/kubernetes/pki
networking:
  dnsDomain: %s
  serviceSubnet: %s
`, clusterName, s.KubernetesVersion, endpoint, s.ClusterDomain, s.ServiceCIDR)
	if s.PodCIDR != "" {
		doc += "  podSubnet: " + s.PodCIDR + "\n"
	}
	return doc
}

// kubeletConfiguration is what every kubelet joined by kubeadm runs with:
// requests to it are authenticated and authorised by the apiserver, its
// client certificate rotates, and its serving certificate comes from the
// cluster CA through a kubelet-serving CSR (approved by the master's
// approver) so that the apiserver can verify it. The cgroup driver is
// kubeadm's default; a host without systemd patches it (kubeadm join
// --patches, or the kubelet's own config).
func kubeletConfiguration(s Settings, dns net.IP) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
cgroupDriver: systemd
clusterDNS:
- %s
clusterDomain: %s
rotateCertificates: true
serverTLSBootstrap: true
staticPodPath: /etc/kubernetes/manifests
`, dns, s.ClusterDomain)
}

// Subjects of the RBAC below.
var (
	bootstrappers = rbacv1ac.Subject().WithKind("Group").WithAPIGroup("rbac.authorization.k8s.io").WithName(NodeGroup)
	nodes         = rbacv1ac.Subject().WithKind("Group").WithAPIGroup("rbac.authorization.k8s.io").WithName("system:nodes")
	anonymous     = rbacv1ac.Subject().WithKind("User").WithAPIGroup("rbac.authorization.k8s.io").WithName("system:anonymous")
)

// RBAC names, kubeadm's, so that a kubeadm-made cluster's and ours look
// alike to anyone who knows one.
const (
	clusterInfoRole = "kubeadm:bootstrap-signer-clusterinfo"
	getNodesRole    = "kubeadm:get-nodes"
)

func roles() []*rbacv1ac.RoleApplyConfiguration {
	getConfigMap := func(name string) *rbacv1ac.PolicyRuleApplyConfiguration {
		return rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("configmaps").WithResourceNames(name).WithVerbs("get")
	}
	return []*rbacv1ac.RoleApplyConfiguration{
		rbacv1ac.Role(clusterInfoRole, metav1.NamespacePublic).WithRules(getConfigMap(bootstrapapi.ConfigMapClusterInfo)),
		rbacv1ac.Role("kubeadm:nodes-kubeadm-config", metav1.NamespaceSystem).WithRules(getConfigMap(KubeadmConfigMap)),
		rbacv1ac.Role("kubeadm:kubelet-config", metav1.NamespaceSystem).WithRules(getConfigMap(KubeletConfigMap)),
	}
}

func roleBindings() []*rbacv1ac.RoleBindingApplyConfiguration {
	bind := func(name, ns string, subjects ...*rbacv1ac.SubjectApplyConfiguration) *rbacv1ac.RoleBindingApplyConfiguration {
		return rbacv1ac.RoleBinding(name, ns).
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("Role").WithName(name)).
			WithSubjects(subjects...)
	}
	return []*rbacv1ac.RoleBindingApplyConfiguration{
		bind(clusterInfoRole, metav1.NamespacePublic, anonymous),
		bind("kubeadm:nodes-kubeadm-config", metav1.NamespaceSystem, bootstrappers, nodes),
		bind("kubeadm:kubelet-config", metav1.NamespaceSystem, bootstrappers, nodes),
	}
}

func clusterRoles() []*rbacv1ac.ClusterRoleApplyConfiguration {
	return []*rbacv1ac.ClusterRoleApplyConfiguration{
		// kubeadm join checks that no Ready Node has the joiner's name.
		rbacv1ac.ClusterRole(getNodesRole).WithRules(rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("nodes").WithVerbs("get")),
	}
}

func clusterRoleBindings() []*rbacv1ac.ClusterRoleBindingApplyConfiguration {
	bind := func(name, role string, subject *rbacv1ac.SubjectApplyConfiguration) *rbacv1ac.ClusterRoleBindingApplyConfiguration {
		return rbacv1ac.ClusterRoleBinding(name).
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("ClusterRole").WithName(role)).
			WithSubjects(subject)
	}
	return []*rbacv1ac.ClusterRoleBindingApplyConfiguration{
		// Bootstrappers may post CSRs...
		bind("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", bootstrappers),
		// ...and the controller-manager's approver approves their node
		// client CSRs...
		bind("kubeadm:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", bootstrappers),
		// ...and a node's renewal of its own client certificate.
		bind("kubeadm:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", nodes),
		bind(getNodesRole, getNodesRole, bootstrappers),
	}
}
