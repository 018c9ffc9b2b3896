// Package csrapprover approves kubelets' serving certificates. A kubelet
// with serverTLSBootstrap asks for its serving certificate with a
// kubernetes.io/kubelet-serving CSR; the controller-manager signs it with
// the cluster CA once approved, and the apiserver then verifies kubelets
// against that CA (logs, exec, port-forward). Upstream approves none of
// them on its own, because only the cluster can tell whether the names
// in one belong to the node asking: this approver approves a CSR only when
// a node asks for itself and every name and address in it is one of its
// Node's, and denies (with an Event) anything else.
package csrapprover

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
)

const nodeUserPrefix = "system:node:"

// Relevant tells whether csr is a kubelet-serving CSR still waiting for a
// decision: the only ones this approver looks at.
func Relevant(csr *certificatesv1.CertificateSigningRequest) bool {
	if csr.Spec.SignerName != certificatesv1.KubeletServingSignerName {
		return false
	}
	for _, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
			return false
		}
	}
	return true
}

// NodeName is the node a kubelet-serving CSR's requester is, or "" when
// the requester is not a node.
func NodeName(csr *certificatesv1.CertificateSigningRequest) string {
	name, ok := strings.CutPrefix(csr.Spec.Username, nodeUserPrefix)
	if !ok || name == "" || !slices.Contains(csr.Spec.Groups, "system:nodes") {
		return ""
	}
	return name
}

// ErrNotANode is Check's error for a requester that is not a node.
var ErrNotANode = errors.New("the requester is not a node (system:node:<name> in system:nodes)")

// allowedUsages may appear in a kubelet-serving CSR; server auth must.
var allowedUsages = []certificatesv1.KeyUsage{
	certificatesv1.UsageDigitalSignature,
	certificatesv1.UsageKeyEncipherment,
	certificatesv1.UsageServerAuth,
}

// Check decides a relevant CSR given the requester's Node (nil when there
// is none): nil approves it, an error denies it and says why.
func Check(csr *certificatesv1.CertificateSigningRequest, node *corev1.Node) error {
	name := NodeName(csr)
	if name == "" {
		return fmt.Errorf("%w: requested by %q", ErrNotANode, csr.Spec.Username)
	}
	req, err := parseRequest(csr.Spec.Request)
	if err != nil {
		return err
	}
	if want := nodeUserPrefix + name; req.Subject.CommonName != want {
		return fmt.Errorf("node %s asks for a certificate of %q; a node may only ask for its own (%s)", name, req.Subject.CommonName, want)
	}
	if !slices.Equal(req.Subject.Organization, []string{"system:nodes"}) {
		return fmt.Errorf("the subject's organization is %q, want exactly [system:nodes]", req.Subject.Organization)
	}
	if !slices.Contains(csr.Spec.Usages, certificatesv1.UsageServerAuth) {
		return fmt.Errorf("usages %v lack %q", csr.Spec.Usages, certificatesv1.UsageServerAuth)
	}
	for _, u := range csr.Spec.Usages {
		if !slices.Contains(allowedUsages, u) {
			return fmt.Errorf("usage %q is not one of a serving certificate's (%v)", u, allowedUsages)
		}
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return errors.New("a kubelet serving certificate has no e-mail addresses or URIs")
	}
	if len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		return errors.New("the request names no DNS name or IP address")
	}
	if node == nil {
		return fmt.Errorf("there is no Node %s", name)
	}
	if node.Name != name {
		return fmt.Errorf("node %s checked against Node %s", name, node.Name)
	}
	var names []string
	var ips []net.IP
	for _, a := range node.Status.Addresses {
		if ip := net.ParseIP(a.Address); ip != nil && (a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP) {
			ips = append(ips, ip)
		} else if a.Type == corev1.NodeHostName || a.Type == corev1.NodeInternalDNS || a.Type == corev1.NodeExternalDNS {
			names = append(names, strings.ToLower(a.Address))
		}
	}
	for _, d := range req.DNSNames {
		if !slices.Contains(names, strings.ToLower(d)) {
			return fmt.Errorf("DNS name %q is not one of Node %s's addresses %v", d, name, names)
		}
	}
	for _, ip := range req.IPAddresses {
		if !slices.ContainsFunc(ips, ip.Equal) {
			return fmt.Errorf("IP address %s is not one of Node %s's addresses %v", ip, name, ips)
		}
	}
	return nil
}

func parseRequest(data []byte) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("the request is not a PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the request does not parse: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the request's signature is wrong: %w", err)
	}
	return req, nil
}
