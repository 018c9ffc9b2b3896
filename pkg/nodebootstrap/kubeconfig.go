package nodebootstrap

import (
	"fmt"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// clusterName is the cluster's name in kubeconfigs, kubeadm's.
const clusterName = "kubernetes"

// clusterKubeconfig is a kubeconfig naming the cluster (server and CA)
// with, when user is not nil, one user: cluster-info holds it without a
// user, a bootstrap kubeconfig with the token's.
func clusterKubeconfig(server string, caPEM []byte, userName string, user *clientcmdapi.AuthInfo) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[clusterName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	if user != nil {
		cfg.AuthInfos[userName] = user
		cfg.Contexts[userName+"@"+clusterName] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: userName}
		cfg.CurrentContext = userName + "@" + clusterName
	} else {
		// kubeadm's cluster-info has an empty user and context too.
		cfg.AuthInfos[""] = &clientcmdapi.AuthInfo{}
		cfg.Contexts[""] = &clientcmdapi.Context{Cluster: clusterName}
	}
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
	return clusterKubeconfig(server, caPEM, "tls-bootstrap-token-user", &clientcmdapi.AuthInfo{Token: t.String()})
}
