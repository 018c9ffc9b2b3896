package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/k8s-master/k8s-master/pkg/component"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/csrapprover"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/nodebootstrap"
	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/rootca"
	"github.com/k8s-master/k8s-master/pkg/version"
)

// This file is what a master does for worker nodes: the objects stock
// kubelets and `kubeadm join` read, applied at every start, and the
// kubelet-serving CSR approver.

// localAdminClient talks to this master's own apiserver with the admin's
// credentials: the admin kubeconfig's server is the VIP, which this master
// may not hold.
func localAdminClient(c *config.Config) (kubernetes.Interface, error) {
	// The files by path, not the admin kubeconfig that embeds them: this
	// client lives as long as the master, and client-go reloads a
	// certificate and a CA bundle named by path (renewal, CA rotation).
	p := c.Layout().PKIDir()
	rc := &rest.Config{Host: c.LocalAPIServerURL(), UserAgent: "k8s-master", TLSClientConfig: rest.TLSClientConfig{
		CAFile: pki.TrustFile(p, pki.ClusterCA), CertFile: pki.CertPath(p, pki.Admin), KeyFile: pki.KeyPath(p, pki.Admin),
	}}
	return kubernetes.NewForConfig(rc)
}

// workerSettings gathers what the objects for workers say.
func workerSettings(ctx context.Context, c *config.Config, store *join.Store) (nodebootstrap.Settings, error) {
	// The bundle: during a CA rotation cluster-info hands workers the old
	// and the new CA.
	ca, err := os.ReadFile(pki.TrustFile(c.Layout().PKIDir(), pki.ClusterCA))
	if err != nil {
		return nodebootstrap.Settings{}, fmt.Errorf("read the cluster CA: %w", err)
	}
	masters, err := store.Masters(ctx)
	if err != nil {
		return nodebootstrap.Settings{}, fmt.Errorf("list the registered masters: %w", err)
	}
	s := nodebootstrap.Settings{
		OwnEndpoint: config.Host(c.AdvertiseAddress, c.APIServerPort), CAPEM: ca,
		KubernetesVersion: version.Local().Kubernetes,
		ServiceCIDR:       c.ServiceCIDR, PodCIDR: c.PodCIDR, ClusterDomain: c.ClusterDomain,
	}
	dns, err := clusterDNS(c)
	if err != nil {
		return nodebootstrap.Settings{}, err
	}
	s.ClusterDNS = dns
	if c.VIP != "" {
		s.VIPEndpoint = config.Host(c.VIP, c.APIServerPort)
	}
	for _, m := range masters {
		s.MasterEndpoints = append(s.MasterEndpoints, config.Host(m.AdvertiseAddress, m.APIServerPort))
	}
	return s, nil
}

// applyWorkerObjects applies cluster-info and the other objects workers
// read, as m.cfg has them now; it returns the endpoint cluster-info names.
func (m *Master) applyWorkerObjects(ctx context.Context) (string, error) {
	cs, err := localAdminClient(m.cfg)
	if err != nil {
		return "", err
	}
	s, err := workerSettings(ctx, m.cfg, join.NewStore(m.etcdClient, nil))
	if err != nil {
		return "", err
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return nodebootstrap.Apply(actx, cs, s)
}

// workerSteps apply the objects for workers (after the join service has
// registered this master, so that it counts as one) and start the
// kubelet-serving CSR approver, the root CA publisher and the add-on
// manager.
func (m *Master) workerSteps() []component.Step {
	return []component.Step{
		{Name: "cluster-info and RBAC for workers", Do: func(ctx context.Context, r *component.Runner) error {
			endpoint, err := m.applyWorkerObjects(ctx)
			if err != nil {
				return fmt.Errorf("%w; workers cannot join until a master start applies them", err)
			}
			m.workerEndpoint = endpoint
			return nil
		}},
		{Do: func(ctx context.Context, r *component.Runner) error {
			cs, err := localAdminClient(m.cfg)
			if err != nil {
				return err
			}
			return r.Start(ctx, &leaseHolder{name: "kubelet serving CSR approver",
				run:     func(ctx context.Context) error { return csrapprover.Run(ctx, cs, m.cfg.Name) },
				failure: "kubelet serving certificates wait for a manual kubectl certificate approve"})
		}},
		{Do: func(ctx context.Context, r *component.Runner) error {
			cs, err := localAdminClient(m.cfg)
			if err != nil {
				return err
			}
			p := m.cfg.Layout().PKIDir()
			files := rootca.Files{Bundle: pki.BundlePath(p, pki.ClusterCA), SigningCA: pki.CertPath(p, pki.ClusterCA),
				ServingCert: pki.CertPath(p, pki.APIServer)}
			return r.Start(ctx, &leaseHolder{name: "root CA publisher",
				run:     func(ctx context.Context) error { return rootca.Run(ctx, cs, m.cfg.Name, files) },
				failure: "kube-root-ca.crt ConfigMaps and the node agent do not follow the cluster CA until the master restarts"})
		}},
		m.addonStep(),
	}
}

// leaseHolder is a part of the master that one master at a time runs:
// run campaigns for a lease and works while it holds it, until its
// context ends. failure says what stops working if run gives up.
type leaseHolder struct {
	name    string
	run     func(ctx context.Context) error
	failure string
	cancel  context.CancelFunc
	done    chan struct{}
}

func (a *leaseHolder) Name() string { return a.name }

func (a *leaseHolder) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan struct{})
	go func() {
		defer close(a.done)
		if err := a.run(ctx); err != nil {
			klog.ErrorS(err, a.name+" stopped; "+a.failure)
		}
	}()
	return nil
}

// Stop releases the lease (the apiserver still serves: components stop
// in reverse order) so another master takes over at once. The wait is
// short: an apiserver without etcd quorum would hold the release up, and
// the others take the lease over when it expires anyway.
func (a *leaseHolder) Stop(ctx context.Context) error {
	if a.cancel == nil {
		return nil
	}
	a.cancel()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return await(ctx, a.done, "the "+a.name+" is still releasing its lease")
}

// Worker tokens, for the admin commands.

// Kube is a client of this master's apiserver with the admin's
// credentials.
func (a *Admin) Kube() (kubernetes.Interface, error) { return localAdminClient(a.Config) }

// WorkerEndpoint is host:port where workers reach the apiserver: the
// endpoint cluster-info publishes (the VIP when there is one), else this
// master's.
func (a *Admin) WorkerEndpoint(ctx context.Context, cs kubernetes.Interface) (string, error) {
	if a.Config.VIP != "" {
		return config.Host(a.Config.VIP, a.Config.APIServerPort), nil
	}
	ep, err := nodebootstrap.ClusterInfoEndpoint(ctx, cs)
	if err != nil || ep != "" {
		return ep, err
	}
	return config.Host(a.Config.AdvertiseAddress, a.Config.APIServerPort), nil
}

// CreateWorkerToken makes a bootstrap token and returns it with the
// `kubeadm join` line that uses it.
func (a *Admin) CreateWorkerToken(ctx context.Context, ttl time.Duration, description string) (nodebootstrap.Token, string, error) {
	cs, err := a.Kube()
	if err != nil {
		return nodebootstrap.Token{}, "", err
	}
	ep, err := a.WorkerEndpoint(ctx, cs)
	if err != nil {
		return nodebootstrap.Token{}, "", err
	}
	t, err := nodebootstrap.CreateToken(ctx, cs, ttl, description)
	if err != nil {
		return nodebootstrap.Token{}, "", err
	}
	return t, nodebootstrap.JoinCommand(ep, t, a.State.CAPin), nil
}

// WorkerKubeconfig is a bootstrap kubeconfig for a kubelet started
// without kubeadm, for a worker token that exists.
func (a *Admin) WorkerKubeconfig(ctx context.Context, token string) ([]byte, error) {
	t, err := nodebootstrap.ParseToken(token)
	if err != nil {
		return nil, err
	}
	cs, err := a.Kube()
	if err != nil {
		return nil, err
	}
	if err := nodebootstrap.CheckToken(ctx, cs, t); err != nil {
		return nil, err
	}
	ep, err := a.WorkerEndpoint(ctx, cs)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(pki.TrustFile(a.Config.Layout().PKIDir(), pki.ClusterCA))
	if err != nil {
		return nil, fmt.Errorf("read the cluster CA: %w", err)
	}
	return nodebootstrap.BootstrapKubeconfig(nodebootstrap.ClusterInfoServer(ep), ca, t)
}

// ListWorkerTokens lists the worker (bootstrap) tokens.
func (a *Admin) ListWorkerTokens(ctx context.Context) ([]nodebootstrap.Info, error) {
	cs, err := a.Kube()
	if err != nil {
		return nil, err
	}
	return nodebootstrap.ListTokens(ctx, cs)
}

// RevokeToken ends a master or worker token given by ID or whole, and
// says which kind it was. A bare ID names whichever kind has it.
func (a *Admin) RevokeToken(ctx context.Context, idOrToken string) (kind string, err error) {
	if nodebootstrap.IsWorkerToken(idOrToken) {
		return a.revokeWorker(ctx, idOrToken)
	}
	if tok, err := join.ParseToken(idOrToken); err == nil {
		return "master", a.Store().RevokeToken(ctx, tok.ID)
	}
	err = a.Store().RevokeToken(ctx, idOrToken)
	if errors.Is(err, join.ErrUnknownToken) {
		return a.revokeWorker(ctx, idOrToken)
	}
	return "master", err
}

func (a *Admin) revokeWorker(ctx context.Context, id string) (string, error) {
	cs, err := a.Kube()
	if err != nil {
		return "", err
	}
	err = nodebootstrap.RevokeToken(ctx, cs, id)
	if errors.Is(err, nodebootstrap.ErrNoSuchToken) && !nodebootstrap.IsWorkerToken(id) {
		return "", fmt.Errorf("no master or worker token with ID %s; see k8s-master token list", id)
	}
	return "worker", err
}
