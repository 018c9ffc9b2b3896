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
	caLine := "certificate-authority-data: " + enc(ca)
	userLines := "client-certificate-data: " + enc(cert) + "\n    client-key-data: " + enc(key)
	if s.Reference {
		caLine = fmt.Sprintf("certificate-authority: %q", s.CAFile)
		userLines = fmt.Sprintf("client-certificate: %q\n    client-key: %q", s.CertFile, s.KeyFile)
	}
	ctx := s.User + "@" + s.ClusterName
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s
    %[3]s
users:
- name: %[4]s
  user:
    %[5]s
contexts:
- name: %[6]s
  context:
    cluster: %[1]s
    user: %[4]s
current-context: %[6]s
`, s.ClusterName, s.Server, caLine, s.User, userLines, ctx)
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
