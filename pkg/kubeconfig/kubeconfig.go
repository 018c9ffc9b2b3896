// Package kubeconfig writes client configuration files that embed their
// credentials, so one file is all a client needs.
package kubeconfig

import (
	"encoding/base64"
	"fmt"
	"os"

	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/pki"
)

// Spec names the server, the CA to trust and the client pair to present.
type Spec struct {
	Path        string
	ClusterName string
	User        string
	Server      string
	CAFile      string
	CertFile    string
	KeyFile     string
	// Reference names the files instead of embedding them: client-go
	// reloads a client certificate named by path (every 5 minutes), so a
	// long-running client in the master's process picks up a renewed
	// certificate without a restart. Kubeconfigs handed to people embed.
	Reference bool
}

// Write renders spec into a kubeconfig (0600: it holds a private key).
func Write(s Spec) error {
	ca, err := os.ReadFile(s.CAFile)
	if err != nil {
		return err
	}
	cert, err := os.ReadFile(s.CertFile)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(s.KeyFile)
	if err != nil {
		return err
	}
	if _, err := pki.ParseCert(cert); err != nil {
		return fmt.Errorf("%s: %w", s.CertFile, err)
	}
	enc := base64.StdEncoding.EncodeToString
	ctx := s.User + "@" + s.ClusterName
	if s.Reference {
		doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s
    certificate-authority: %[3]q
users:
- name: %[4]s
  user:
    client-certificate: %[5]q
    client-key: %[6]q
contexts:
- name: %[7]s
  context:
    cluster: %[1]s
    user: %[4]s
current-context: %[7]s
`, s.ClusterName, s.Server, s.CAFile, s.User, s.CertFile, s.KeyFile, ctx)
		return write(s.Path, doc)
	}
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s
    certificate-authority-data: %[3]s
users:
- name: %[4]s
  user:
    client-certificate-data: %[5]s
    client-key-data: %[6]s
contexts:
- name: %[7]s
  context:
    cluster: %[1]s
    user: %[4]s
current-context: %[7]s
`, s.ClusterName, s.Server, enc(ca), s.User, enc(cert), enc(key), ctx)
	return write(s.Path, doc)
}

// write replaces path with doc unless it already holds exactly that: a
// start or an hourly renewal check that changed nothing rewrites nothing.
func write(path, doc string) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == doc {
		return nil
	}
	return fsutil.WriteFileAtomic(path, []byte(doc), 0o600)
}
