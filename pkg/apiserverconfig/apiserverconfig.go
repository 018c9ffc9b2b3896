// Package apiserverconfig writes the configuration files kube-apiserver
// reads from the data directory: the secrets-encryption configuration (a
// cluster secret made once at init and copied to every joining master) and
// the structured authentication configuration (rewritten by each master at
// start). Both are kube-apiserver's file formats, so one package owns them.
package apiserverconfig

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"

	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/layout"
)

// WriteEncryptionConfig writes an EncryptionConfiguration that encrypts
// Secrets with a fresh secretbox key (XSalsa20-Poly1305, the local provider
// upstream recommends over aescbc); identity stays readable as a fallback so
// objects written before encryption was on can still be read. It refuses
// to replace an existing key: Secrets written with it would be lost.
func WriteEncryptionConfig(l layout.Layout) error {
	path := l.EncryptionConfig()
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s already exists; refusing to replace the secrets encryption key", path)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	doc := fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - secretbox:
      keys:
      - name: key1
        secret: %s
  - identity: {}
`, base64.StdEncoding.EncodeToString(key))
	return fsutil.WriteFileAtomic(path, []byte(doc), 0o600)
}

// ClusterInfoPath is the one API object anonymous requests may reach:
// kube-public/cluster-info, which a joining worker reads before it trusts
// the cluster (it checks the bootstrap token's signature on it and the CA
// pin). RBAC grants system:anonymous only get on it (pkg/nodebootstrap).
const ClusterInfoPath = "/api/v1/namespaces/kube-public/configmaps/cluster-info"

// WriteAuthenticationConfig writes the structured authentication config
// that limits anonymous access to the health endpoints and cluster-info.
func WriteAuthenticationConfig(l layout.Layout) error {
	doc := `apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
anonymous:
  enabled: true
  conditions:
  - path: /livez
  - path: /readyz
  - path: /healthz
  - path: ` + ClusterInfoPath + `
`
	return fsutil.WriteFileAtomic(l.AuthenticationConfig(), []byte(doc), 0o600)
}
