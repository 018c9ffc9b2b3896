package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/k8s-master/k8s-master/pkg/apiserverconfig"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/fsutil"
)

// Names of the CAs and shared keys, kubeadm's layout so operators find
// their way: pki/ca, pki/front-proxy-ca, pki/etcd/ca, pki/sa.
const (
	ClusterCA    = "ca"
	FrontProxyCA = "front-proxy-ca"
	EtcdCA       = "ca" // under pki/etcd
	SAKey        = "sa.key"
	SAPub        = "sa.pub"
)

// Leaf certificate file stems.
const (
	APIServer              = "apiserver"
	APIServerKubeletClient = "apiserver-kubelet-client"
	APIServerEtcdClient    = "apiserver-etcd-client"
	FrontProxyClient       = "front-proxy-client"
	EtcdServer             = "server" // under pki/etcd
	EtcdPeer               = "peer"   // under pki/etcd
	ControllerManager      = "controller-manager"
	ControllerManagerTLS   = "controller-manager-serving"
	Scheduler              = "scheduler"
	SchedulerTLS           = "scheduler-serving"
	Admin                  = "admin"
	JoinService            = "join-service"
)

// CreateClusterSecrets makes what every master of one cluster shares: the
// three CAs, the service-account key pair and the secrets-encryption key.
// It refuses to overwrite any of them.
func CreateClusterSecrets(c *config.Config, now time.Time) error {
	l := c.Layout()
	dir := l.PKIDir()
	for _, ca := range []struct{ dir, name, cn string }{
		{dir, ClusterCA, "kubernetes"},
		{dir, FrontProxyCA, "front-proxy-ca"},
		{l.EtcdPKIDir(), EtcdCA, "etcd-ca"},
	} {
		if _, created, err := LoadOrCreateCA(ca.dir, ca.name, ca.cn, now); err != nil {
			return err
		} else if !created {
			return fmt.Errorf("%s already exists; refusing to replace a cluster CA", CertPath(ca.dir, ca.name))
		}
	}
	if err := writeSAKeyPair(dir); err != nil {
		return err
	}
	return apiserverconfig.WriteEncryptionConfig(l)
}

func writeSAKeyPair(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, SAKey)); err == nil {
		return fmt.Errorf("%s already exists; refusing to replace the service-account key", filepath.Join(dir, SAKey))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, SAKey), keyPEM, 0o600); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, SAPub), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
}

// ClusterCAs are the loaded authorities a master signs its leaves with.
type ClusterCAs struct {
	Cluster, FrontProxy, Etcd *CA
	// ClusterServing signs the leaves that clients outside the masters
	// verify (the apiserver's and join service's serving certificates,
	// the apiserver's client certificate for kubelets): the old cluster
	// CA while a CA rotation's window runs, else Cluster.
	ClusterServing *CA
	// EtcdServing signs the members' server and peer certificates: the
	// old etcd CA until a rotation's phase serve, else Etcd. Only masters
	// verify them, against the etcd bundle.
	EtcdServing *CA
}

// LoadClusterCAs loads the three CAs from the data directory.
func LoadClusterCAs(c *config.Config) (*ClusterCAs, error) {
	dir := c.Layout().PKIDir()
	var cas ClusterCAs
	var err error
	if cas.Cluster, err = LoadCA(dir, ClusterCA); err != nil {
		return nil, fmt.Errorf("load cluster CA: %w", err)
	}
	if cas.FrontProxy, err = LoadCA(dir, FrontProxyCA); err != nil {
		return nil, fmt.Errorf("load front-proxy CA: %w", err)
	}
	if cas.Etcd, err = LoadCA(c.Layout().EtcdPKIDir(), EtcdCA); err != nil {
		return nil, fmt.Errorf("load etcd CA: %w", err)
	}
	if cas.ClusterServing, err = LoadServingCA(dir, ClusterCA, cas.Cluster); err != nil {
		return nil, fmt.Errorf("load the old cluster CA of the rotation under way (k8s-master certs rotate-ca): %w", err)
	}
	if cas.EtcdServing, err = LoadServingCA(c.Layout().EtcdPKIDir(), EtcdCA, cas.Etcd); err != nil {
		return nil, fmt.Errorf("load the old etcd CA of the rotation under way (k8s-master certs rotate-ca): %w", err)
	}
	return &cas, nil
}

// APIServerSANs lists the names and addresses the apiserver certificate
// must carry for every way a client may reach it.
func APIServerSANs(c *config.Config) ([]string, []net.IP, error) {
	svcIP, err := c.FirstServiceIP()
	if err != nil {
		return nil, nil, err
	}
	dns := []string{
		c.Name, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + c.ClusterDomain,
	}
	ips := []net.IP{net.ParseIP(c.AdvertiseAddress), svcIP, net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if c.VIP != "" {
		ips = append(ips, net.ParseIP(c.VIP))
	}
	for _, san := range c.APIServerSANs {
		if ip := net.ParseIP(san); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, san)
		}
	}
	return dedupStrings(dns), dedupIPs(ips), nil
}

// EnsureLeaves issues or renews every leaf certificate this master needs
// (missing, not matching its spec, or within RenewBefore of expiry) and
// reports how many it (re)wrote.
func EnsureLeaves(c *config.Config, cas *ClusterCAs, now time.Time) (int, error) {
	return ensureLeaves(c, cas, now, false)
}

// RenewLeaves re-issues every leaf certificate of this master, due or not
// (certs renew).
func RenewLeaves(c *config.Config, cas *ClusterCAs, now time.Time) (int, error) {
	return ensureLeaves(c, cas, now, true)
}

func ensureLeaves(c *config.Config, cas *ClusterCAs, now time.Time, all bool) (int, error) {
	dir, etcdDir := c.Layout().PKIDir(), c.Layout().EtcdPKIDir()
	apiDNS, apiIPs, err := APIServerSANs(c)
	if err != nil {
		return 0, err
	}
	nodeIP := net.ParseIP(c.AdvertiseAddress)
	etcdDNS := dedupStrings([]string{c.Name, "localhost"})
	etcdIPs := dedupIPs([]net.IP{nodeIP, net.IPv4(127, 0, 0, 1), net.IPv6loopback})
	// The join service answers on the VIP too (tokens name it); etcd never
	// does: a member's certificate names that member only.
	joinIPs := etcdIPs
	if c.VIP != "" {
		joinIPs = dedupIPs(append(append([]net.IP{}, etcdIPs...), net.ParseIP(c.VIP)))
	}
	loopDNS := []string{"localhost"}
	loopIPs := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}

	jobs := []struct {
		ca   *CA
		dir  string
		spec LeafSpec
	}{
		{cas.ClusterServing, dir, LeafSpec{Name: APIServer, CommonName: "kube-apiserver", DNSNames: apiDNS, IPs: apiIPs, Usage: ServerAuth}},
		{cas.ClusterServing, dir, LeafSpec{Name: APIServerKubeletClient, CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Usage: ClientAuth}},
		{cas.Etcd, dir, LeafSpec{Name: APIServerEtcdClient, CommonName: "kube-apiserver-etcd-client", Usage: ClientAuth}},
		{cas.FrontProxy, dir, LeafSpec{Name: FrontProxyClient, CommonName: "front-proxy-client", Usage: ClientAuth}},
		{cas.EtcdServing, etcdDir, LeafSpec{Name: EtcdServer, CommonName: c.Name, DNSNames: etcdDNS, IPs: etcdIPs, Usage: ServerAuth | ClientAuth}},
		{cas.EtcdServing, etcdDir, LeafSpec{Name: EtcdPeer, CommonName: c.Name, DNSNames: etcdDNS, IPs: etcdIPs, Usage: ServerAuth | ClientAuth}},
		{cas.Cluster, dir, LeafSpec{Name: ControllerManager, CommonName: "system:kube-controller-manager", Usage: ClientAuth}},
		{cas.ClusterServing, dir, LeafSpec{Name: ControllerManagerTLS, CommonName: "kube-controller-manager", DNSNames: loopDNS, IPs: loopIPs, Usage: ServerAuth}},
		{cas.Cluster, dir, LeafSpec{Name: Scheduler, CommonName: "system:kube-scheduler", Usage: ClientAuth}},
		{cas.ClusterServing, dir, LeafSpec{Name: SchedulerTLS, CommonName: "kube-scheduler", DNSNames: loopDNS, IPs: loopIPs, Usage: ServerAuth}},
		{cas.Cluster, dir, LeafSpec{Name: Admin, CommonName: "kubernetes-admin", Organization: []string{"system:masters"}, Usage: ClientAuth}},
		{cas.ClusterServing, dir, LeafSpec{Name: JoinService, CommonName: "k8s-master-join", DNSNames: etcdDNS, IPs: joinIPs, Usage: ServerAuth}},
	}
	written := 0
	for _, j := range jobs {
		var changed bool
		var err error
		if all {
			changed, err = true, j.ca.WriteLeaf(j.dir, j.spec, now)
		} else {
			changed, err = j.ca.EnsureLeaf(j.dir, j.spec, now)
		}
		if err != nil {
			return written, err
		}
		if changed {
			written++
		}
	}
	return written, nil
}

// ReadPin returns the pin of the cluster CA that signs the join service's
// certificate (the old CA while a rotation's window runs).
func ReadPin(c *config.Config) (string, error) {
	path := ServingCAPath(c.Layout().PKIDir(), ClusterCA)
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	cert, err := ParseCert(data)
	if err != nil {
		return "", errors.Join(fmt.Errorf("%s", path), err)
	}
	return Pin(cert), nil
}

func dedupStrings(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func dedupIPs(in []net.IP) []net.IP {
	seen := map[string]bool{}
	var out []net.IP
	for _, ip := range in {
		if ip == nil || seen[ip.String()] {
			continue
		}
		seen[ip.String()] = true
		out = append(out, ip)
	}
	return out
}
