package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/component-base/metrics/legacyregistry"
	genericcontrollermanager "k8s.io/controller-manager/app"
	controllerhealthz "k8s.io/controller-manager/pkg/healthz"
	"k8s.io/klog/v2"
	schedapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	schedconfig "k8s.io/kubernetes/cmd/kube-scheduler/app/config"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	"k8s.io/kubernetes/pkg/scheduler"
	configv1 "k8s.io/kubernetes/pkg/scheduler/apis/config/v1"

	kubeschedulerv1 "k8s.io/kube-scheduler/config/v1"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/process"
)

func schedulerArgs(c *config.Config) []string {
	p := c.Layout().PKIDir()
	kc := c.Layout().SchedulerKubeconfig()
	args := []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--client-ca-file=" + pki.BundlePath(p, pki.ClusterCA),
		"--requestheader-client-ca-file=" + pki.BundlePath(p, pki.FrontProxyCA),
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.SchedulerPort),
		"--tls-cert-file=" + pki.CertPath(p, pki.SchedulerTLS),
		"--tls-private-key-file=" + pki.KeyPath(p, pki.SchedulerTLS),
		"--leader-elect=true",
	}
	// The scheduler's --kube-api-qps/--kube-api-burst are deprecated in
	// favour of its configuration file's clientConnection, but still apply
	// when, as here, no file is given (options.ApplyDeprecated).
	return append(args, inProcessClientFlags...)
}

// NewScheduler prepares kube-scheduler; Start runs it.
func NewScheduler(ctx context.Context, c *config.Config) (*Supervised, error) {
	return newSupervised(ctx, "kube-scheduler", func(ctx context.Context) (runner, error) {
		opts := scheduleroptions.NewOptions()
		fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
		for _, f := range opts.Flags.FlagSets {
			fs.AddFlagSet(f)
		}
		if err := fs.Parse(schedulerArgs(c)); err != nil {
			return nil, fmt.Errorf("flags: %w", err)
		}
		// opts.InformerName stays nil (upstream's command reserves
		// "kube-scheduler" since 1.37): no informer metrics, see
		// releaseInformerNames.
		//
		// Setup's scheduler holds a context for its lifetime; it must be
		// the one the run is cancelled with, so build it under a context
		// that the runner cancels.
		runCtx, cancel := context.WithCancel(ctx)
		cc, sched, err := schedapp.Setup(runCtx, opts)
		if err != nil {
			cancel()
			return nil, err
		}
		return func(ctx context.Context) error {
			defer cancel()
			stop := context.AfterFunc(ctx, cancel)
			defer stop()
			return runScheduler(runCtx, cc, sched)
		}, nil
	})
}

// runScheduler is upstream's schedapp.Run with one difference: it returns
// when the lease is lost or the context ends, where upstream calls os.Exit,
// which would end this whole process (etcd member and apiserver included).
// The lease is released on a graceful stop so another master's scheduler
// takes over at once.
func runScheduler(ctx context.Context, cc *schedconfig.CompletedConfig, sched *scheduler.Scheduler) error {
	logger := klog.FromContext(ctx)

	external := &kubeschedulerv1.KubeSchedulerConfiguration{}
	if err := configv1.Convert_config_KubeSchedulerConfiguration_To_v1_KubeSchedulerConfiguration(&cc.ComponentConfig, external, nil); err != nil {
		return fmt.Errorf("unable to convert configz: %w", err)
	}
	external.SetGroupVersionKind(kubeschedulerv1.SchemeGroupVersion.WithKind("KubeSchedulerConfiguration"))
	if err := process.RegisterConfigz("componentconfig", external); err != nil {
		return err
	}

	cc.EventBroadcaster.StartRecordingToSink(ctx.Done())
	defer cc.EventBroadcaster.Shutdown()

	checks := []healthz.HealthChecker{healthz.NewShutdownHealthz(ctx.Done())}
	if cc.LeaderElection != nil {
		checks = append(checks, cc.LeaderElection.WatchDog)
	}
	handlerSynced := make(chan struct{})
	checks = append(checks, healthz.NamedCheck("sched-handler-sync", func(_ *http.Request) error {
		select {
		case <-handlerSynced:
			return nil
		default:
			return errors.New("handlers are not fully synchronized")
		}
	}))

	stopServing := func() {}
	if cc.SecureServing != nil {
		mux := genericcontrollermanager.NewBaseHandler(&cc.ComponentConfig.DebuggingConfiguration, controllerhealthz.NewMutableHealthzHandler(checks...))
		healthz.InstallLivezHandler(mux)
		healthz.InstallReadyzHandler(mux, checks...)
		mux.Handle("/metrics/resources", legacyregistry.Handler())
		handler := genericcontrollermanager.BuildHandlerChain(mux, &cc.Authorization, &cc.Authentication)
		internalStop := make(chan struct{})
		stopped, listenerStopped, err := cc.SecureServing.Serve(handler, 5*time.Second, internalStop)
		if err != nil {
			close(internalStop)
			return fmt.Errorf("failed to start secure server: %w", err)
		}
		stopServing = func() {
			close(internalStop)
			<-listenerStopped
			<-stopped
		}
	}
	defer stopServing()

	cc.InformerFactory.Start(ctx.Done())
	if cc.DynInformerFactory != nil {
		cc.DynInformerFactory.Start(ctx.Done())
	}
	cc.InformerFactory.WaitForCacheSync(ctx.Done())
	if cc.DynInformerFactory != nil {
		cc.DynInformerFactory.WaitForCacheSync(ctx.Done())
	}
	if err := sched.WaitForHandlersSync(ctx); err != nil {
		logger.Error(err, "handlers are not fully synchronized")
	}
	close(handlerSynced)

	if cc.LeaderElection == nil {
		sched.Run(ctx)
		return nil
	}
	le := *cc.LeaderElection
	le.ReleaseOnCancel = true
	le.Callbacks = leaderelection.LeaderCallbacks{
		OnStartedLeading: func(ctx context.Context) { sched.Run(ctx) },
		OnStoppedLeading: func() {
			if ctx.Err() == nil {
				logger.Error(nil, "Leader election lost")
			}
		},
	}
	elector, err := leaderelection.NewLeaderElector(le)
	if err != nil {
		return fmt.Errorf("couldn't create leader elector: %w", err)
	}
	elector.Run(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("lost the kube-scheduler lease")
}
