package nodebootstrap

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/clientcmd"
)

func TestChooseEndpoint(t *testing.T) {
	masters := []string{"192.0.2.1:6443", "192.0.2.2:6443"}
	for _, tc := range []struct {
		name          string
		vip, existing string
		want          string
	}{
		{"the VIP always", "192.0.2.50:6443", "192.0.2.1:6443", "192.0.2.50:6443"},
		{"first master of a VIP-less cluster", "", "", "192.0.2.2:6443"},
		{"kept while that master is registered", "", "192.0.2.1:6443", "192.0.2.1:6443"},
		{"replaced once it is gone", "", "192.0.2.9:6443", "192.0.2.2:6443"},
	} {
		s := Settings{VIPEndpoint: tc.vip, OwnEndpoint: "192.0.2.2:6443", MasterEndpoints: masters}
		if got := ChooseEndpoint(s, tc.existing); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestClusterDNS(t *testing.T) {
	for in, want := range map[string]string{
		"10.96.0.0/12":  "10.96.0.10",
		"10.100.0.0/16": "10.100.0.10",
		"fd00:10::/108": "fd00:10::a",
		"10.0.0.0/29":   "",
		"10.0.0.248/29": "",
		"nonsense":      "",
	} {
		ip, err := ClusterDNS(in)
		if want == "" {
			if err == nil {
				t.Errorf("ClusterDNS(%s) = %s, want an error", in, ip)
			}
			continue
		}
		if err != nil || ip.String() != want {
			t.Errorf("ClusterDNS(%s) = %v, %v; want %s", in, ip, err, want)
		}
	}
}

func TestApply(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	s := Settings{
		OwnEndpoint: "192.0.2.1:6443", MasterEndpoints: []string{"192.0.2.1:6443"}, CAPEM: []byte("CA"),
		KubernetesVersion: "v1.37.2", ServiceCIDR: "10.96.0.0/12", PodCIDR: "10.244.0.0/16", ClusterDomain: "cluster.local",
	}
	ep, err := Apply(ctx, cs, s)
	if err != nil || ep != "192.0.2.1:6443" {
		t.Fatalf("Apply = %s, %v", ep, err)
	}
	// The bootstrap signer adds its signatures; a later start keeps them.
	info, err := cs.CoreV1().ConfigMaps("kube-public").Get(ctx, "cluster-info", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info.Data["jws-kubeconfig-abcdef"] = "sig"
	if _, err := cs.CoreV1().ConfigMaps("kube-public").Update(ctx, info, metav1.UpdateOptions{FieldManager: "kube-controller-manager"}); err != nil {
		t.Fatal(err)
	}
	// A second master of a VIP-less cluster starts: cluster-info keeps
	// the first.
	s2 := s
	s2.OwnEndpoint, s2.MasterEndpoints = "192.0.2.2:6443", []string{"192.0.2.1:6443", "192.0.2.2:6443"}
	if ep, err := Apply(ctx, cs, s2); err != nil || ep != "192.0.2.1:6443" {
		t.Fatalf("second master's Apply = %s, %v; want the first master kept", ep, err)
	}
	info, err = cs.CoreV1().ConfigMaps("kube-public").Get(ctx, "cluster-info", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Data["jws-kubeconfig-abcdef"] != "sig" || !strings.Contains(info.Data["kubeconfig"], "server: https://192.0.2.1:6443") {
		t.Errorf("cluster-info after the second apply: %v", info.Data)
	}
	kc, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "kubeadm-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: ClusterConfiguration", "controlPlaneEndpoint: 192.0.2.1:6443", "kubernetesVersion: v1.37.2", "serviceSubnet: 10.96.0.0/12", "podSubnet: 10.244.0.0/16", "dnsDomain: cluster.local"} {
		if !strings.Contains(kc.Data["ClusterConfiguration"], want) {
			t.Errorf("kubeadm-config lacks %q:\n%s", want, kc.Data["ClusterConfiguration"])
		}
	}
	kl, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "kubelet-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: KubeletConfiguration", "- 10.96.0.10", "clusterDomain: cluster.local", "serverTLSBootstrap: true", "rotateCertificates: true", "mode: Webhook"} {
		if !strings.Contains(kl.Data["kubelet"], want) {
			t.Errorf("kubelet-config lacks %q:\n%s", want, kl.Data["kubelet"])
		}
	}
	crb, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, "kubeadm:node-autoapprove-bootstrap", metav1.GetOptions{})
	if err != nil || crb.RoleRef.Name != "system:certificates.k8s.io:certificatesigningrequests:nodeclient" || crb.Subjects[0].Name != NodeGroup {
		t.Errorf("kubeadm:node-autoapprove-bootstrap = %+v, %v", crb, err)
	}
	rb, err := cs.RbacV1().RoleBindings("kube-public").Get(ctx, "kubeadm:bootstrap-signer-clusterinfo", metav1.GetOptions{})
	if err != nil || rb.Subjects[0].Name != "system:anonymous" {
		t.Errorf("anonymous binding for cluster-info = %+v, %v", rb, err)
	}
	// Once the first master is gone, the next start names itself.
	s3 := s2
	s3.MasterEndpoints = []string{"192.0.2.2:6443"}
	if ep, err := Apply(ctx, cs, s3); err != nil || ep != "192.0.2.2:6443" {
		t.Fatalf("Apply after the first master left = %s, %v", ep, err)
	}
}

// cluster-info's kubeconfig is what kubeadm's discovery reads: one
// unnamed cluster with the server and the CA.
func TestClusterInfoKubeconfig(t *testing.T) {
	data, err := clusterInfoKubeconfig("https://192.0.2.50:6443", []byte("CA"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Clusters[""]
	if len(cfg.Clusters) != 1 || c == nil || c.Server != "https://192.0.2.50:6443" || string(c.CertificateAuthorityData) != "CA" || len(cfg.AuthInfos) != 0 {
		t.Errorf("cluster-info kubeconfig:\n%s", data)
	}
}

// TestKubeletConfigClusterDNS: kubelet-config announces --cluster-dns when
// it is set, the service range's 10th address otherwise.
func TestKubeletConfigClusterDNS(t *testing.T) {
	s := Settings{OwnEndpoint: "192.0.2.1:6443", CAPEM: []byte("CA"), KubernetesVersion: "v1.37.2", ServiceCIDR: "10.96.0.0/12", ClusterDomain: "cluster.local"}
	for dns, want := range map[string]string{"": "10.96.0.10", "10.96.0.53": "10.96.0.53"} {
		s.ClusterDNS = dns
		cms, err := configMaps(s, s.OwnEndpoint)
		if err != nil {
			t.Fatal(err)
		}
		if kc := cms[2].Data["kubelet"]; !strings.Contains(kc, "clusterDNS:\n- "+want+"\n") {
			t.Errorf("cluster DNS %q: kubelet-config\n%s", dns, kc)
		}
	}
}
