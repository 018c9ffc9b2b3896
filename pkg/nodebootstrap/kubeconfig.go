package nodebootstrap

import (
	"fmt"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// clusterName is the cluster's name in kubeconfigs, kubeadm's.
const clusterName = "kubernetes"

// clusterInfoKubeconfig is cluster-info's kubeconfig: one unnamed
// cluster (server and CA) and nothing else, as kubeadm writes it; kubeadm's
// discovery looks for the unnamed cluster first.
func clusterInfoKubeconfig(server string, caPEM []byte) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[""] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	return write(cfg)
}

func write(cfg *clientcmdapi.Config) ([]byte, error) {
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("encode kubeconfig: %w", err)
	}
	return data, nil
}

// BootstrapKubeconfig is the kubeconfig a kubelet started with
// --bootstrap-kubeconfig uses to ask for its client certificate: the
// server (https://VIP:port when there is a VIP), the cluster CA embedded
// and the worker token.
func BootstrapKubeconfig(server string, caPEM []byte, t Token) ([]byte, error) {
	const user = "tls-bootstrap-token-user"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[clusterName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: t.String()}
	cfg.Contexts[user+"@"+clusterName] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: user}
	cfg.CurrentContext = user + "@" + clusterName
	return write(cfg)
}
