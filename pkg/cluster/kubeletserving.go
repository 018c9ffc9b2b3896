package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// kubeletWait bounds how long rotate-ca waits, after phase serve, for the
// kubelets to serve certificates of the new CA; kubeletPoll is how often
// it looks.
var (
	kubeletWait = 10 * time.Minute
	kubeletPoll = 5 * time.Second
)

// waitKubeletsServing waits until the kubelet of every Ready Node that
// serves a certificate of the old cluster CA serves one of the new CA
// instead (the node agent renews it once phase serve is published): phase
// drop takes the old CA out of the apiserver's --kubelet-certificate-authority,
// and a kubelet still serving an old certificate would then refuse
// kubectl logs, exec and port-forward. A kubelet whose certificate neither
// CA signed (self-signed, serverTLSBootstrap off) is not the rotation's
// business; a Node that is not Ready is skipped with a warning.
func waitKubeletsServing(ctx context.Context, cs kubernetes.Interface, oldCA, newCA []byte, out io.Writer) error {
	oldPool, newPool := x509.NewCertPool(), x509.NewCertPool()
	oldPool.AppendCertsFromPEM(oldCA)
	newPool.AppendCertsFromPEM(newCA)
	deadline := time.Now().Add(kubeletWait)
	said := ""
	for {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("list the Nodes to check their kubelets: %w", err)
		}
		var pending, notReady []string
		checked := 0
		for i := range nodes.Items {
			n := &nodes.Items[i]
			if !nodeReady(n) {
				notReady = append(notReady, n.Name)
				continue
			}
			checked++
			if reason := kubeletOnOldCA(ctx, n, oldPool, newPool); reason != "" {
				pending = append(pending, n.Name+" ("+reason+")")
			}
		}
		if len(notReady) > 0 && said == "" {
			fmt.Fprintf(out, "warning: Node(s) not Ready, not checked: %s; their kubelets need the new CA before they come back (docs/certificates.md)\n", strings.Join(notReady, ", "))
		}
		if len(pending) == 0 {
			if checked > 0 {
				fmt.Fprintf(out, "kubelets: all %d Ready node(s) serve certificates the new CA verifies\n", checked)
			}
			return nil
		}
		slices.Sort(pending)
		msg := fmt.Sprintf("waiting for %d of %d kubelet(s) to serve a certificate of the new CA (the node agent renews it): %s", len(pending), checked, strings.Join(pending, ", "))
		if msg != said {
			fmt.Fprintln(out, msg)
			said = msg
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s, %d kubelet(s) still serve certificates of the old CA: %s; the old CA stays trusted until they do. Is the node agent running there (kubectl -n kube-system get pods -l k8s-app=k8s-master-node-agent -o wide)? Fix or rejoin those nodes, then rerun k8s-master certs rotate-ca: it carries on", kubeletWait, len(pending), strings.Join(pending, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(kubeletPoll):
		}
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// kubeletOnOldCA says why the Node's kubelet counts as still on the old
// CA ("" when it does not): it serves a certificate the old CA verifies
// and the new one does not, or it cannot be reached.
func kubeletOnOldCA(ctx context.Context, n *corev1.Node, oldPool, newPool *x509.CertPool) string {
	addr := ""
	for _, t := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP, corev1.NodeHostName} {
		for _, a := range n.Status.Addresses {
			if a.Type == t && addr == "" {
				addr = a.Address
			}
		}
	}
	if addr == "" {
		return "no address"
	}
	port := int(n.Status.DaemonEndpoints.KubeletEndpoint.Port)
	if port == 0 {
		port = 10250
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		// Only the certificate is wanted: it is verified below against
		// each CA.
		Config: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return "unreachable: " + err.Error()
	}
	defer conn.Close()
	chain := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(chain) == 0 {
		return "no certificate"
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	verifies := func(p *x509.CertPool) bool {
		_, err := chain[0].Verify(x509.VerifyOptions{Roots: p, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err == nil
	}
	if !verifies(newPool) && verifies(oldPool) {
		return "old CA"
	}
	return ""
}
