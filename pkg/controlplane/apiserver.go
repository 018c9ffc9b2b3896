// Package controlplane runs kube-apiserver, kube-controller-manager and
// kube-scheduler inside this process through their upstream app packages,
// at the options level (their cobra commands install signal handlers and
// logging that may only exist once per process).
package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/healthz"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	encryptionconfigcontroller "k8s.io/apiserver/pkg/server/options/encryptionconfig/controller"
	"k8s.io/klog/v2"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"

	"github.com/k8s-master/k8s-master/pkg/certauthcache"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/poll"
	"github.com/k8s-master/k8s-master/pkg/process"
)

// APIServer is a running kube-apiserver.
type APIServer struct {
	cfg  *config.Config
	done chan struct{}
	err  error
	// Gate drains the requests on the VIP before a graceful hand-over.
	Gate *VIPGate
}

// apiServerArgs are the kube-apiserver flags for this master, the same a
// kubeadm master would pass, pointed at the data directory.
func apiServerArgs(c *config.Config) []string {
	l := c.Layout()
	p := l.PKIDir()
	args := []string{
		"--advertise-address=" + c.AdvertiseAddress,
		"--bind-address=" + c.BindAddress,
		"--secure-port=" + strconv.Itoa(c.APIServerPort),
		// The member's socket, plain: the storage client builds its trust
		// pool once and could not follow an etcd CA rotation; and nothing
		// outside this process (root only) reaches the socket.
		"--etcd-servers=" + c.LocalEtcdSocketURL(),
		"--client-ca-file=" + pki.BundlePath(p, pki.ClusterCA),
		"--tls-cert-file=" + pki.CertPath(p, pki.APIServer),
		"--tls-private-key-file=" + pki.KeyPath(p, pki.APIServer),
		"--kubelet-client-certificate=" + pki.CertPath(p, pki.APIServerKubeletClient),
		"--kubelet-client-key=" + pki.KeyPath(p, pki.APIServerKubeletClient),
		"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
		// Kubelets serve with certificates from the cluster CA (their
		// kubelet-serving CSRs, see pkg/csrapprover): logs and exec check
		// them.
		"--kubelet-certificate-authority=" + pki.BundlePath(p, pki.ClusterCA),
		// Workers join with bootstrap tokens (pkg/nodebootstrap).
		"--enable-bootstrap-token-auth=true",
		"--proxy-client-cert-file=" + pki.CertPath(p, pki.FrontProxyClient),
		"--proxy-client-key-file=" + pki.KeyPath(p, pki.FrontProxyClient),
		"--requestheader-client-ca-file=" + pki.BundlePath(p, pki.FrontProxyCA),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--service-account-issuer=https://kubernetes.default.svc." + c.ClusterDomain,
		"--service-account-key-file=" + p + "/" + pki.SAPub,
		"--service-account-signing-key-file=" + p + "/" + pki.SAKey,
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--encryption-provider-config=" + l.EncryptionConfig(),
		// The file changes during a key rotation (pkg/secretskey) and
		// every master takes it up without a restart.
		"--encryption-provider-config-automatic-reload=true",
		// Anonymous requests are authenticated only for the health
		// endpoints (structured authentication config, GA in 1.34).
		"--authentication-config=" + l.AuthenticationConfig(),
		"--profiling=false",
		// Process-wide: the controller-manager's gate comes through here.
		"--feature-gates=" + process.FeatureGates,
		"--cert-dir=" + l.APIServerCertDir(),
	}
	// Since 1.37 the apiserver refuses to start when the endpoint reconciler
	// cannot publish its address as an endpoint of the kubernetes Service,
	// and endpoints may not be loopback. A loopback master (a single master
	// on one host: tests, benchmarks) reconciles none; it never could
	// publish one, 1.36 only failed each reconcile.
	if ip := net.ParseIP(c.AdvertiseAddress); ip != nil && ip.IsLoopback() {
		args = append(args, "--endpoint-reconciler-type=none")
	}
	return args
}

// StartAPIServer builds the apiserver and starts serving in the background;
// use WaitReady to wait for /readyz.
func StartAPIServer(ctx context.Context, c *config.Config) (*APIServer, error) {
	// A rotation waits for every master to reload its encryption
	// configuration, three times; upstream looks at the file once a
	// minute. Reading and hashing a small file every 2 s costs nothing.
	encryptionconfigcontroller.EncryptionConfigFileChangePollDuration = 2 * time.Second
	s := apiserveroptions.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(apiServerArgs(c)); err != nil {
		return nil, fmt.Errorf("kube-apiserver flags: %w", err)
	}
	if err := process.SetComponentGlobals(s.GenericServerRunOptions.ComponentGlobalsRegistry); err != nil {
		return nil, fmt.Errorf("kube-apiserver feature gates: %w", err)
	}

	completed, err := s.Complete(ctx)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver options: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return nil, fmt.Errorf("kube-apiserver options: %w", utilerrors.NewAggregate(errs))
	}

	// The steps of apiserverapp.Run, with one change between NewConfig and
	// Complete: /livez must not fail while etcd is briefly unreachable, or
	// a liveness probe would restart this process and with it our own etcd
	// member. /readyz keeps its etcd check. Run's first step since 1.37,
	// reserving the informer name "kube-apiserver" for informer metrics, is
	// left out: the controller-manager's restarts clear that registry
	// (releaseInformerNames), and completed.InformerName nil means no such
	// metrics, as before 1.37.
	apiCfg, err := apiserverapp.NewConfig(completed)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver config: %w", err)
	}
	for _, g := range []*genericapiserver.Config{
		apiCfg.KubeAPIs.ControlPlane.Generic,
		&apiCfg.ApiExtensions.GenericConfig.Config,
		&apiCfg.Aggregator.GenericConfig.Config,
	} {
		// A new slice: the three configs share one backing array.
		var kept []healthz.HealthChecker
		for _, h := range g.LivezChecks {
			if h.Name() != "etcd" {
				kept = append(kept, h)
			}
		}
		g.LivezChecks = kept
	}
	if err := cacheCertAuthentications(apiCfg, completed.Authentication.RequestHeader); err != nil {
		return nil, err
	}
	// The aggregator serves every request first: the VIP gate goes in
	// front of its handler chain.
	var gate *VIPGate
	if c.VIP != "" {
		gate = NewVIPGate(net.ParseIP(c.VIP))
		agg := &apiCfg.Aggregator.GenericConfig.Config
		build := agg.BuildHandlerChainFunc
		agg.BuildHandlerChainFunc = func(h http.Handler, gc *genericapiserver.Config) http.Handler {
			return gate.Wrap(build(h, gc))
		}
	}
	done, err := apiCfg.Complete()
	if err != nil {
		return nil, err
	}
	chain, err := apiserverapp.CreateServerChain(done)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver: %w", err)
	}
	prepared, err := chain.PrepareRun()
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver: %w", err)
	}
	a := &APIServer{cfg: c, done: make(chan struct{}), Gate: gate}
	go func() {
		defer close(a.done)
		a.err = prepared.Run(ctx)
		if a.err != nil {
			klog.ErrorS(a.err, "kube-apiserver stopped")
		}
	}()
	return a, nil
}

// cacheCertAuthentications puts a certauthcache in front of each server's
// authenticator, so a client certificate's chain is verified once per TLS
// client rather than on every request; each cache forgets its entries when
// the client CAs change.
func cacheCertAuthentications(apiCfg *apiserverapp.Config, rh *genericoptions.RequestHeaderAuthenticationOptions) error {
	var headers, prefixes []string
	if rh != nil {
		headers = slices.Concat(rh.UsernameHeaders, rh.UIDHeaders, rh.GroupHeaders)
		prefixes = rh.ExtraHeaderPrefixes
	}
	for _, g := range []*genericapiserver.Config{
		apiCfg.KubeAPIs.ControlPlane.Generic,
		&apiCfg.ApiExtensions.GenericConfig.Config,
		&apiCfg.Aggregator.GenericConfig.Config,
	} {
		if g.Authentication.Authenticator == nil {
			continue
		}
		if g.SecureServing == nil || g.SecureServing.ClientCA == nil {
			return errors.New("kube-apiserver: no client CA provider to watch; cannot cache certificate authentications")
		}
		cache := certauthcache.New(g.Authentication.Authenticator, headers, prefixes)
		g.SecureServing.ClientCA.AddListener(cache)
		g.Authentication.Authenticator = cache
	}
	return nil
}

// Done is closed when the apiserver has stopped; Err says why.
func (a *APIServer) Done() <-chan struct{} { return a.done }
func (a *APIServer) Err() error            { return a.err }

// WaitReady polls /readyz until it answers ok.
func (a *APIServer) WaitReady(ctx context.Context, timeout time.Duration) error {
	return WaitHTTPSOK(ctx, a.cfg.LocalAPIServerURL()+"/readyz", pki.BundlePath(a.cfg.Layout().PKIDir(), pki.ClusterCA), timeout, a.done)
}

// WaitHTTPSOK polls url (trusting caFile) every 50 ms until it answers 200,
// the timeout passes, ctx ends or abort closes.
func WaitHTTPSOK(ctx context.Context, url, caFile string, timeout time.Duration, abort <-chan struct{}) error {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	defer client.CloseIdleConnections()
	// abort ends the wait like ctx would, but says so.
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-abort:
			cancel()
		case <-actx.Done():
		}
	}()
	last := "no answer yet"
	err = poll.Until(actx, 50*time.Millisecond, timeout, func(context.Context) (bool, error) {
		resp, err := client.Get(url)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		var body [512]byte
		n, _ := resp.Body.Read(body[:])
		resp.Body.Close()
		last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body[:n])))
		return resp.StatusCode == http.StatusOK, nil
	}, func() error { return fmt.Errorf("%s not ready after %s (last: %s)", url, timeout, last) })
	if ctx.Err() == nil && errors.Is(err, context.Canceled) {
		return fmt.Errorf("stopped before %s was ready", url)
	}
	return err
}
