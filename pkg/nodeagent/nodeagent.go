// Package nodeagent is what k8s-master runs on a stock worker: a pod of
// the node-agent add-on (a DaemonSet) that keeps the node's kubelet in
// step with the cluster's CAs, so that a CA rotation (`certs rotate-ca`)
// reaches kubelets that joined before it, without a rejoin.
//
// A kubelet builds its trust in the apiserver once, from the CA embedded
// in its kubeconfig, and renews its client certificate only at 70-90 % of
// its lifetime; after a rotation drops the old CA it would neither verify
// the apiserver nor be accepted by it. The agent reads the trust bundle
// and the signing CA the masters publish (ConfigMap kube-system/
// k8s-master-ca, mounted) and, on the node:
//   - writes the bundle into the kubelet's kubeconfig and into its
//     client CA file (which the kubelet reloads by itself);
//   - when the kubelet's client certificate is not signed by the signing
//     CA, or its serving certificate not by the serving CA (the new one
//     from phase serve on), asks for a new one with the kubelet's identity
//     (the controller-manager approves a node's client renewal, the
//     masters' CSR approver its serving certificate) and installs it the
//     way the kubelet does (a timestamped file and the -current.pem link);
//   - then restarts the kubelet (SIGTERM; systemd's Restart=always, as in
//     kubeadm's kubelet.service, starts it again): running pods stay.
package nodeagent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/certificate/csr"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/ociimage"
)

// Config says where the agent finds the node's files.
type Config struct {
	// NodeName is the Node the agent runs on (the kubelet's identity).
	NodeName string
	// HostRoot is where the node's file system is mounted in the pod
	// (the DaemonSet mounts /etc/kubernetes and /var/lib/kubelet under
	// it); the paths below and in the kubelet's files are the node's.
	HostRoot string
	// CADir holds the published CAs (rootca.BundleKey, rootca.SigningCAKey).
	CADir string
	// KubeletKubeconfig is the kubelet's --kubeconfig.
	KubeletKubeconfig string
	// KubeletConfig is the kubelet's --config (for its clientCAFile).
	KubeletConfig string
	// Interval is how often the agent looks.
	Interval time.Duration
}

// The files in CADir (the keys of rootca.CAConfigMap).
const (
	bundleFile    = "ca-bundle.crt"
	signingCAFile = "signing-ca.crt"
	servingCAFile = "serving-ca.crt"
)

// Result says what a sync changed.
type Result struct {
	Trust, ClientCert, ServingCert bool
	// Restarted is the PIDs of the kubelet processes signalled.
	Restarted []int
}

func (r Result) changed() bool { return r.Trust || r.ClientCert || r.ServingCert }

// Run syncs every Interval until ctx ends.
func Run(ctx context.Context, c Config) error {
	if c.NodeName == "" {
		return errors.New("the node name is unknown: the DaemonSet passes it as NODE_NAME from spec.nodeName")
	}
	lastErr := ""
	for {
		r, err := Sync(ctx, c)
		switch {
		case err != nil && err.Error() != lastErr:
			klog.ErrorS(err, "node agent: retrying", "in", c.Interval)
			lastErr = err.Error()
		case err == nil:
			lastErr = ""
			if r.changed() {
				klog.InfoS("node agent: brought the kubelet in step with the cluster CAs", "trust", r.Trust,
					"clientCertificate", r.ClientCert, "servingCertificate", r.ServingCert, "kubeletRestarted", r.Restarted)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.Interval):
		}
	}
}

// host is where a path of the node is in the pod.
func (c Config) host(p string) string { return filepath.Join(c.HostRoot, p) }

// resolve is host(p), through p's link when it is one naming a path of
// the node (as the kubelet's -current.pem links do).
func (c Config) resolve(p string) string {
	if target, err := os.Readlink(c.host(p)); err == nil {
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		return c.host(target)
	}
	return c.host(p)
}

// Sync brings the kubelet in step with the published CAs once.
func Sync(ctx context.Context, c Config) (Result, error) {
	var r Result
	bundle, signing, err := readCAs(c.CADir)
	if err != nil {
		return r, err
	}
	kc, err := clientcmd.LoadFromFile(c.host(c.KubeletKubeconfig))
	if err != nil {
		return r, fmt.Errorf("read the kubelet's kubeconfig: %w", err)
	}
	kctx, ok := kc.Contexts[kc.CurrentContext]
	if !ok {
		return r, fmt.Errorf("the kubelet's kubeconfig %s has no current context", c.KubeletKubeconfig)
	}
	cluster, ok := kc.Clusters[kctx.Cluster]
	user, uok := kc.AuthInfos[kctx.AuthInfo]
	if !ok || !uok {
		return r, fmt.Errorf("the kubelet's kubeconfig %s: context %q names no cluster or user", c.KubeletKubeconfig, kc.CurrentContext)
	}

	// The client CA file first: the kubelet reloads it, and the
	// apiserver's kubelet client certificate may come from the new CA
	// soon.
	if caFile, err := clientCAFile(c.host(c.KubeletConfig)); err != nil {
		return r, err
	} else if caFile != "" {
		if _, err := writeIfOtherCerts(c.host(caFile), bundle, 0o644); err != nil {
			return r, fmt.Errorf("write the kubelet's client CA file: %w", err)
		}
	}

	// The kubelet's trust in the apiserver.
	if cluster.CertificateAuthority != "" {
		changed, err := writeIfOtherCerts(c.host(cluster.CertificateAuthority), bundle, 0o644)
		if err != nil {
			return r, fmt.Errorf("write the kubelet's CA file: %w", err)
		}
		r.Trust = changed
	} else if !sameCerts(cluster.CertificateAuthorityData, bundle) {
		cluster.CertificateAuthorityData = bundle
		data, err := clientcmd.Write(*kc)
		if err != nil {
			return r, fmt.Errorf("encode the kubelet's kubeconfig: %w", err)
		}
		if err := fsutil.WriteFileAtomic(c.host(c.KubeletKubeconfig), data, 0o600); err != nil {
			return r, fmt.Errorf("write the kubelet's kubeconfig: %w", err)
		}
		r.Trust = true
	}

	// Certificates of the new signing CA, asked for with the kubelet's
	// current identity (still accepted: the masters trust old and new
	// until the rotation's last phase).
	if user.ClientCertificate == "" {
		return r, fmt.Errorf("the kubelet's kubeconfig %s names no client certificate file", c.KubeletKubeconfig)
	}
	clientPath, keyPath := user.ClientCertificate, user.ClientKey
	if keyPath == "" {
		keyPath = clientPath
	}
	signed, err := signedBy(c.resolve(clientPath), signing)
	if err != nil {
		return r, fmt.Errorf("the kubelet's client certificate: %w", err)
	}
	var cs kubernetes.Interface
	client := func() (kubernetes.Interface, error) {
		if cs != nil {
			return cs, nil
		}
		var err error
		cs, err = kubernetes.NewForConfig(&rest.Config{Host: cluster.Server, Timeout: 30 * time.Second,
			TLSClientConfig: rest.TLSClientConfig{CAData: bundle, CertFile: c.resolve(clientPath), KeyFile: c.resolve(keyPath)}})
		return cs, err
	}
	if !signed {
		cs, err := client()
		if err != nil {
			return r, err
		}
		tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + c.NodeName, Organization: []string{"system:nodes"}}}
		pair, err := requestCert(ctx, cs, tmpl, certificatesv1.KubeAPIServerClientKubeletSignerName,
			[]certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}, signing)
		if err != nil {
			return r, fmt.Errorf("renew the kubelet's client certificate: %w", err)
		}
		if err := install(c, clientPath, keyPath, "kubelet-client", pair); err != nil {
			return r, err
		}
		r.ClientCert = true
	}

	// The serving certificate, when the kubelet has one of the cluster's
	// (serverTLSBootstrap; a self-signed one is the kubelet's business),
	// once servers move to the new CA (phase serve): until then the
	// apiserver's client for kubelets may not trust the new CA yet (it
	// reloads its CA file every 5 minutes).
	servingPath := filepath.Join(filepath.Dir(clientPath), "kubelet-server-current.pem")
	servingCA, err := os.ReadFile(filepath.Join(c.CADir, servingCAFile))
	if err != nil || !sameCerts(servingCA, signing) {
		servingCA = nil // an older master publishes none; or not phase serve yet
	}
	if leaf, err := readLeaf(c.resolve(servingPath)); err == nil && servingCA != nil && !verifies(leaf, servingCA) && verifies(leaf, bundle) {
		cs, err := client()
		if err != nil {
			return r, err
		}
		tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + c.NodeName, Organization: []string{"system:nodes"}},
			DNSNames: leaf.DNSNames, IPAddresses: leaf.IPAddresses}
		pair, err := requestCert(ctx, cs, tmpl, certificatesv1.KubeletServingSignerName,
			[]certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}, signing)
		if err != nil {
			return r, fmt.Errorf("renew the kubelet's serving certificate: %w", err)
		}
		if err := install(c, servingPath, servingPath, "kubelet-server", pair); err != nil {
			return r, err
		}
		r.ServingCert = true
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return r, fmt.Errorf("the kubelet's serving certificate: %w", err)
	}

	if r.changed() {
		pids, err := restartKubelet()
		r.Restarted = pids
		if err != nil {
			return r, fmt.Errorf("%w; the kubelet runs with its old credentials until it restarts: restart it (systemctl restart kubelet)", err)
		}
	}
	return r, nil
}

// readCAs reads the published bundle and signing CA; both must hold
// certificates, and the bundle the signing CA.
func readCAs(dir string) (bundle, signing []byte, err error) {
	bundle, err = os.ReadFile(filepath.Join(dir, bundleFile))
	if err == nil {
		signing, err = os.ReadFile(filepath.Join(dir, signingCAFile))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("the cluster CAs are not published yet (ConfigMap kube-system/k8s-master-ca): %w", err)
	}
	bcerts, err := parseCerts(bundle)
	if err != nil {
		return nil, nil, fmt.Errorf("the published CA bundle: %w", err)
	}
	scerts, err := parseCerts(signing)
	if err != nil {
		return nil, nil, fmt.Errorf("the published signing CA: %w", err)
	}
	for _, s := range scerts {
		found := false
		for _, b := range bcerts {
			found = found || b.Equal(s)
		}
		if !found {
			return nil, nil, fmt.Errorf("the published signing CA %q is not in the bundle; waiting for the masters to publish both", s.Subject.CommonName)
		}
	}
	return bundle, signing, nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for b, rest := pem.Decode(data); b != nil; b, rest = pem.Decode(rest) {
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in it")
	}
	return out, nil
}

func readLeaf(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs[0], nil
}

func pool(pemData []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(pemData)
	return p
}

// verifies tells whether a CA of caPEM signed leaf (any usage; validity
// aside, which the kubelet's own rotation looks after).
func verifies(leaf *x509.Certificate, caPEM []byte) bool {
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool(caPEM), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: leaf.NotBefore.Add(time.Second)})
	return err == nil
}

func signedBy(path string, caPEM []byte) (bool, error) {
	leaf, err := readLeaf(path)
	if err != nil {
		return false, err
	}
	return verifies(leaf, caPEM), nil
}

// requestCert is request; tests sign locally instead.
var requestCert = request

// csrTimeout bounds the wait for a CSR to be approved and signed.
var csrTimeout = 2 * time.Minute

// request asks for a certificate of signer for a new key and returns the
// certificate and key PEM, once the certificate is signed by signingCA
// (until the controller-manager reloads its signing CA, it signs with
// the old one: such a certificate is not kept, and the next sync asks
// again).
func request(ctx context.Context, cs kubernetes.Interface, tmpl *x509.CertificateRequest, signer string, usages []certificatesv1.KeyUsage, signingCA []byte) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, err
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	ctx, cancel := context.WithTimeout(ctx, csrTimeout)
	defer cancel()
	name, uid, err := csr.RequestCertificateWithContext(ctx, cs, csrPEM, "", signer, nil, usages, key)
	if err != nil {
		return nil, fmt.Errorf("create the CSR: %w", err)
	}
	certPEM, err := csr.WaitForCertificate(ctx, cs, name, uid)
	if err != nil {
		return nil, fmt.Errorf("CSR %s not approved and signed within %s (kubectl get csr %s): %w", name, csrTimeout, name, err)
	}
	leaf, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CSR %s: %w", name, err)
	}
	if !verifies(leaf[0], signingCA) {
		return nil, fmt.Errorf("CSR %s was signed by %q, not yet the new CA; asking again at the next sync", name, leaf[0].Issuer.CommonName)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})...), nil
}

// install puts a certificate and key where the kubelet reads them: as the
// kubelet's certificate store does (a new PREFIX-TIMESTAMP.pem and the
// PREFIX-current.pem link moved to it) when certPath is that link, else
// over the files themselves.
func install(c Config, certPath, keyPath, prefix string, pair []byte) error {
	fi, err := os.Lstat(c.host(certPath))
	if err == nil && fi.Mode()&os.ModeSymlink != 0 && filepath.Base(certPath) == prefix+"-current.pem" {
		dir := filepath.Dir(certPath)
		name := filepath.Join(dir, prefix+"-"+time.Now().Format("2006-01-02-15-04-05")+".pem")
		if err := fsutil.WriteFileAtomic(c.host(name), pair, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		tmp := c.host(filepath.Join(dir, "."+prefix+"-current.pem.new"))
		os.Remove(tmp)
		// The link names the node's path, as the kubelet's own do.
		if err := os.Symlink(name, tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, c.host(certPath)); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("move %s to %s: %w", certPath, name, err)
		}
		return nil
	}
	if certPath == keyPath {
		return fsutil.WriteFileAtomic(c.host(certPath), pair, 0o600)
	}
	certs, key := splitPair(pair)
	if err := fsutil.WriteFileAtomic(c.host(keyPath), key, 0o600); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(c.host(certPath), certs, 0o644)
}

func splitPair(pair []byte) (certs, key []byte) {
	for b, rest := pem.Decode(pair); b != nil; b, rest = pem.Decode(rest) {
		if b.Type == "CERTIFICATE" {
			certs = append(certs, pem.EncodeToMemory(b)...)
		} else {
			key = append(key, pem.EncodeToMemory(b)...)
		}
	}
	return certs, key
}

// writeIfOtherCerts writes the bundle to path unless it holds the same
// certificates already (in whatever order and layout): a kubelet is not
// restarted for a reformatted file.
func writeIfOtherCerts(path string, bundle []byte, mode os.FileMode) (bool, error) {
	if cur, err := os.ReadFile(path); err == nil && sameCerts(cur, bundle) {
		return false, nil
	}
	return true, fsutil.WriteFileAtomic(path, bundle, mode)
}

// sameCerts tells whether two PEM bundles hold the same certificates.
func sameCerts(a, b []byte) bool {
	ca, errA := parseCerts(a)
	cb, errB := parseCerts(b)
	if errA != nil || errB != nil || len(ca) != len(cb) {
		return false
	}
	for _, x := range ca {
		found := false
		for _, y := range cb {
			found = found || x.Equal(y)
		}
		if !found {
			return false
		}
	}
	return true
}

// clientCAFile is authentication.x509.clientCAFile of the kubelet's
// configuration file ("" when it has none, or no such file).
func clientCAFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the kubelet's configuration: %w", err)
	}
	var kc struct {
		Authentication struct {
			X509 struct {
				ClientCAFile string `json:"clientCAFile"`
			} `json:"x509"`
		} `json:"authentication"`
	}
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return "", fmt.Errorf("the kubelet's configuration %s: %w", path, err)
	}
	return kc.Authentication.X509.ClientCAFile, nil
}

// procRoot is where processes are listed (the DaemonSet runs with the
// node's PID namespace).
var procRoot = "/proc"

// restartKubelet sends SIGTERM to the kubelet of this node: the process
// named kubelet in the agent's network namespace (the agent runs in the
// node's; on a machine with several network namespaces, such as a lab,
// that tells this node's kubelet from others').
func restartKubelet() ([]int, error) {
	self, err := os.Readlink(filepath.Join(procRoot, "self/ns/net"))
	if err != nil {
		return nil, fmt.Errorf("find the kubelet: %w", err)
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("find the kubelet: %w", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "comm"))
		if err != nil || string(bytes.TrimSpace(comm)) != "kubelet" {
			continue
		}
		ns, err := os.Readlink(filepath.Join(procRoot, e.Name(), "ns/net"))
		if err != nil || ns != self {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			return pids, fmt.Errorf("signal the kubelet (PID %d): %w", pid, err)
		}
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		return nil, errors.New("no kubelet process in this node's network namespace (does the pod run with hostPID and hostNetwork?)")
	}
	return pids, nil
}

// ImageTag is the node agent image's tag for a k8s-master release: the
// release with what an image tag cannot hold ("~", "+") as "-".
func ImageTag(release string) string {
	t := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			return r
		}
		return '-'
	}, release)
	if t == "" || t[0] == '.' || t[0] == '-' {
		t = "v" + t
	}
	if len(t) > 128 {
		t = t[:128]
	}
	return t
}

// ImageName is the node agent's image in repository for a release.
func ImageName(repository, release string) string {
	return strings.TrimSuffix(repository, "/") + "/k8s-master:" + ImageTag(release)
}

// BinaryPath is where the k8s-master binary is in the node agent's image.
const BinaryPath = "/usr/local/bin/k8s-master"

// WriteImage writes the node agent's image, this very binary, as an OCI
// archive to out (for `ctr -n k8s.io images import` on each node, or a
// push to the cluster's registry) and returns its name.
func WriteImage(out, repository, release string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find this binary: %w", err)
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		return "", fmt.Errorf("read this binary: %w", err)
	}
	name := ImageName(repository, release)
	img := ociimage.Image{Name: name, Entrypoint: []string{BinaryPath},
		Files: []ociimage.File{{Path: BinaryPath, Data: bin}}}
	if err := img.WriteFile(out); err != nil {
		return "", err
	}
	return name, nil
}
