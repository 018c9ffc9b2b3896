package controlplane

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/cache"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	kcmnames "k8s.io/kubernetes/cmd/kube-controller-manager/names"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/process"
)

func controllerManagerArgs(c *config.Config) []string {
	p := c.Layout().PKIDir()
	kc := c.Layout().ControllerManagerKubeconfig()
	args := []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		// Both CAs given: no lookup of the extension-apiserver-authentication
		// ConfigMap, so the configuration builds before the apiserver is up.
		"--client-ca-file=" + pki.BundlePath(p, pki.ClusterCA),
		"--requestheader-client-ca-file=" + pki.BundlePath(p, pki.FrontProxyCA),
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.ControllerManagerPort),
		"--tls-cert-file=" + pki.CertPath(p, pki.ControllerManagerTLS),
		"--tls-private-key-file=" + pki.KeyPath(p, pki.ControllerManagerTLS),
		"--cluster-signing-cert-file=" + pki.CertPath(p, pki.ClusterCA),
		"--cluster-signing-key-file=" + pki.KeyPath(p, pki.ClusterCA),
		"--root-ca-file=" + pki.BundlePath(p, pki.ClusterCA),
		"--service-account-private-key-file=" + p + "/" + pki.SAKey,
		"--use-service-account-credentials=true",
		"--leader-elect=true",
		// pkg/rootca publishes kube-root-ca.crt instead: upstream's
		// publisher reads --root-ca-file once, so pods would miss a CA
		// rotation until a master restarted.
		"--controllers=*,bootstrapsigner,tokencleaner,-" + kcmnames.RootCACertificatePublisherController,
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--cluster-name=kubernetes",
		"--profiling=false",
	}
	args = append(args, inProcessClientFlags...)
	if c.PodCIDR != "" {
		args = append(args, "--allocate-node-cidrs=true", "--cluster-cidr="+c.PodCIDR)
	}
	// Test only: TestWorkerLab sets this (to a Go duration such as 100s) so
	// that the certificates the controller-manager signs for kubelets expire
	// within the test and their renewal is seen. Nothing else sets it; the
	// default validity (one year) is what users get.
	if d := os.Getenv(TestSigningDurationEnv); d != "" {
		args = append(args, "--cluster-signing-duration="+d)
	}
	return args
}

// inProcessClientFlags set the client-side rate limit of the
// controller-manager and the scheduler, which reach their apiserver in this
// same process over loopback. Upstream's defaults (controller-manager 20/s,
// burst 30, for each controller's client; scheduler 50/s, burst 100) protect
// a remote apiserver from components on other machines; here they were
// what bounded a 1000-pod Deployment to about 50 s (the ReplicaSet
// controller creating 20 pods a second; scripts/bench-scale.sh). At 200/s,
// burst 400, the same Deployment's pods all exist in about 11-25 s on this
// 2-core machine, where the apiserver's CPU, not the client, is the limit;
// unlimited (-1) or 400/800 were no faster there, only burstier. The
// apiserver's Priority and Fairness still queues these requests (the
// workload-high and system levels) behind everything else it serves.
var inProcessClientFlags = []string{"--kube-api-qps=200", "--kube-api-burst=400"}

// TestSigningDurationEnv names the environment variable that sets the
// controller-manager's --cluster-signing-duration; only the worker lab
// test sets it.
const TestSigningDurationEnv = "K8S_MASTER_TEST_CLUSTER_SIGNING_DURATION"

// NewControllerManager prepares kube-controller-manager; Start runs it.
func NewControllerManager(ctx context.Context, c *config.Config) (*Supervised, error) {
	return newSupervised(ctx, "kube-controller-manager", func(ctx context.Context) (runner, error) {
		s, err := kcmoptions.NewKubeControllerManagerOptions()
		if err != nil {
			return nil, err
		}
		known, disabled, aliases := kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()
		fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
		nfs := s.Flags(known, disabled, aliases)
		for _, f := range nfs.FlagSets {
			fs.AddFlagSet(f)
		}
		if err := fs.Parse(controllerManagerArgs(c)); err != nil {
			return nil, fmt.Errorf("flags: %w", err)
		}
		cfg, err := s.Config(ctx, known, disabled, aliases)
		if err != nil {
			return nil, err
		}
		completed := cfg.Complete()
		return func(ctx context.Context) error {
			process.UnregisterConfigz(kcmapp.ConfigzName)
			releaseInformerNames()
			// Run serves its secure port until the context it is given
			// ends, not until it returns: upstream's process exits. A run
			// that lost its lease must free the port for the next build,
			// which listens on it again.
			runCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			return kcmapp.Run(runCtx, completed)
		}, nil
	})
}

// releaseInformerNames frees the informer names (client-go's per-process
// registry of names for informer metrics) before the controller-manager
// runs. Since 1.37 its Run reserves "kube-controller-manager" there; the
// name is released when the run's informers shut down, but not when the
// run fails after reserving it and before starting them (the apiserver not
// healthy within 10 s, a controller that cannot be built): every later run
// in this process would then fail with "informer name is already
// registered" (upstream's process exits instead). client-go offers no
// release by name, only of the whole registry; that is safe because the
// controller-manager's is the only name this process reserves: the
// apiserver and scheduler are built here with none (see StartAPIServer and
// NewScheduler).
func releaseInformerNames() { cache.ResetInformerNamesForTesting() }
