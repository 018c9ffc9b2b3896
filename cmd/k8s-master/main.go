// Command k8s-master is a whole Kubernetes control plane in one process:
// embedded etcd, kube-apiserver, kube-controller-manager and kube-scheduler.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/k8s-master/k8s-master/pkg/cluster"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/process"
	"github.com/k8s-master/k8s-master/pkg/service"
	"github.com/k8s-master/k8s-master/pkg/upgrade"
	"github.com/k8s-master/k8s-master/pkg/version"
)

// stopTimeout bounds a graceful stop: leases released, apiserver drained,
// etcd closed.
const stopTimeout = 15 * time.Second

// exitVersionRefused is the exit status of a start the upgrade checks
// refuse for its version: the unit's RestartPreventExitStatus stops
// systemd from retrying, since only another binary can help.
const exitVersionRefused = 78 // EX_CONFIG

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", flagMessage(err))
		var r *upgrade.Refusal
		if errors.As(err, &r) && !r.Retry {
			os.Exit(exitVersionRefused)
		}
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	process.SetupCommandLine()
	root := &cobra.Command{
		Use:           "k8s-master",
		Short:         "A highly available Kubernetes control plane in one process",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (see %s --help)", err, c.CommandPath())
	})
	// Every subcommand takes --data-dir.
	dataDir := config.DefaultDataDir
	root.PersistentFlags().StringVar(&dataDir, "data-dir", dataDir, "directory holding this master's state (PKI, etcd data, kubeconfigs)")
	root.AddCommand(newInitCommand(&dataDir), newStartCommand(&dataDir), newVersionCommand())
	addClusterCommands(root, &dataDir)
	addConfigFlag(root)
	root.AddCommand(newConfigCommand(), newResetCommand(&dataDir), newNodeAgentCommand())
	return root
}

// masterFlags binds the flags shared by init and start to a Config.
func masterFlags(fs *pflag.FlagSet, c *config.Config) {
	nodeFlags(fs, c)
	fs.StringVar(&c.ServiceCIDR, "service-cidr", c.ServiceCIDR, "Service cluster IP range")
	fs.StringVar(&c.PodCIDR, "pod-cidr", c.PodCIDR, "Pod network range; when set the controller-manager allocates node Pod CIDRs")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", c.ClusterDomain, "cluster DNS domain")
	fs.StringVar(&c.VIP, "vip", c.VIP, "virtual IP of the control plane, held by one healthy master on --iface (a free address of the masters' LAN)")
	fs.IntVar(&c.VIPLeaseTTL, "vip-lease-ttl", c.VIPLeaseTTL, "seconds a dead VIP holder may keep the VIP at worst (the election session's TTL, 2-60)")
}

// nodeFlags are the settings of this master alone (join takes only these;
// the cluster-wide ones come from the cluster).
func nodeFlags(fs *pflag.FlagSet, c *config.Config) {
	fs.StringVar(&c.Name, "name", c.Name, "node and etcd member name (default: the hostname)")
	fs.StringVar(&c.AdvertiseAddress, "advertise-address", c.AdvertiseAddress, "address other masters and clients reach this master on (default: the address of the default-route interface)")
	fs.StringVar(&c.BindAddress, "bind-address", c.BindAddress, "address the apiserver listens on")
	fs.IntVar(&c.APIServerPort, "apiserver-port", c.APIServerPort, "apiserver port")
	fs.IntVar(&c.EtcdClientPort, "etcd-client-port", c.EtcdClientPort, "etcd client port")
	fs.IntVar(&c.EtcdPeerPort, "etcd-peer-port", c.EtcdPeerPort, "etcd peer port")
	fs.IntVar(&c.EtcdMetricsPort, "etcd-metrics-port", c.EtcdMetricsPort, "etcd metrics port (loopback)")
	fs.IntVar(&c.ControllerManagerPort, "controller-manager-port", c.ControllerManagerPort, "controller-manager secure port (loopback)")
	fs.IntVar(&c.SchedulerPort, "scheduler-port", c.SchedulerPort, "scheduler secure port (loopback)")
	fs.IntVar(&c.JoinPort, "join-port", c.JoinPort, "join service port (HTTPS)")
	fs.StringVar(&c.VIPInterface, "iface", c.VIPInterface, "interface for the VIP on this master (default: the one whose subnet holds the VIP)")
	fs.StringSliceVar(&c.APIServerSANs, "apiserver-san", c.APIServerSANs, "extra names or addresses for the apiserver certificate (repeatable)")
	fs.StringVar(&c.SnapshotDir, "snapshot-dir", c.SnapshotDir, "directory for this master's scheduled snapshots (outside the data directory)")
	fs.DurationVar(&c.SnapshotInterval, "snapshot-interval", c.SnapshotInterval, "take a snapshot this often, skipped while nothing changed (0: no scheduled snapshots)")
	fs.IntVar(&c.SnapshotRetention, "snapshot-retention", c.SnapshotRetention, "scheduled snapshots of this master to keep; older ones are deleted")
	fs.Var(&c.EtcdQuota, "etcd-quota-bytes", "etcd backend quota of this master's member (16Mi-8Gi): past it etcd refuses writes until space is freed, which the master then reclaims by itself")
	fs.StringVar(&c.ImageRepository, "image-repository", c.ImageRepository, "registry (and path) the kube-proxy and CoreDNS images come from, e.g. a mirror for air-gapped hosts; give every master the same")
	fs.StringSliceVar(&c.DisabledAddons, "disable-addon", c.DisabledAddons, "add-on not to run, kube-proxy, coredns or node-agent (repeatable): for a cluster with another proxy or DNS, or without the node agent; one applied before is deleted")
	fs.StringVar(&c.ClusterDNS, "cluster-dns", c.ClusterDNS, "address of the cluster DNS Service, announced to kubelets (default: the 10th address of the service range, 10.96.0.10 by default)")
	fs.StringVar(&c.LogFile, "log-file", c.LogFile, `where component logs go ("-" for standard error; default DATA_DIR/k8s-master.log)`)
	fs.IntVarP(&c.LogVerbosity, "v", "v", c.LogVerbosity, "log verbosity (0-10)")
}

func explicitFlags(fs *pflag.FlagSet) map[string]bool {
	m := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { m[f.Name] = true })
	return m
}

func newInitCommand(dataDir *string) *cobra.Command {
	c := config.Default()
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a new cluster and run its first master (as the k8s-master service where systemd runs)",
		Long: `Create a new cluster in an empty data directory: cluster PKI, etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and an admin
kubeconfig, then run the master until SIGTERM or SIGINT.

On a host that runs systemd with the k8s-master service installed, init
hands the master to that service (enabled, so it survives reboots) and
returns once the control plane is ready; --foreground keeps it here.

On a data directory that already holds a cluster, init resumes it (as start
does) unless the flags given contradict the recorded settings.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.DataDir = *dataDir
			if service.Use(cmd.Context(), foreground) {
				return serviceRun(cmd, &c, "init", "")
			}
			return runMaster(cmd, &c, cluster.Init)
		},
	}
	masterFlags(cmd.Flags(), &c)
	addForegroundFlag(cmd)
	return cmd
}

func newStartCommand(dataDir *string) *cobra.Command {
	c := config.Default()
	var forceUpgrade bool
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Run the master recorded in the data directory in the foreground",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.DataDir = *dataDir
			return runMaster(cmd, &c, func(ctx context.Context, c *config.Config, o cluster.Options) (*cluster.Master, error) {
				o.ForceUpgrade = forceUpgrade
				return cluster.Start(ctx, c, o)
			})
		},
	}
	masterFlags(cmd.Flags(), &c)
	// Under systemd: systemctl set-environment K8S_MASTER_FORCE_UPGRADE=1,
	// restart, then unset-environment.
	cmd.Flags().BoolVar(&forceUpgrade, "force-upgrade", os.Getenv("K8S_MASTER_FORCE_UPGRADE") == "1",
		"start a new version even while another master is down, or go back to an older patch release (default from K8S_MASTER_FORCE_UPGRADE=1)")
	return cmd
}

type startFunc func(context.Context, *config.Config, cluster.Options) (*cluster.Master, error)

func runMaster(cmd *cobra.Command, c *config.Config, run startFunc) error {
	if err := completeConfig(cmd, c); err != nil {
		return err
	}
	stopDebug, err := process.ServeDebug()
	if err != nil {
		return err
	}
	defer stopDebug()
	ctx, cancel := signalContext()
	defer cancel()
	out, ready := service.Notify(ctx, cmd.OutOrStdout())
	stopProfile := startupProfile()
	endBurst := startupGC()
	m, err := run(ctx, c, cluster.Options{Out: out, Explicit: explicitFlags(cmd.Flags()), Describe: flagMessage})
	endBurst()
	stopProfile()
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		return err
	}
	ready()
	return m.Wait(ctx, stopTimeout, out)
}

// signalContext ends on the first SIGTERM or SIGINT. A second SIGINT (an
// operator pressing Ctrl-C again) exits at once; repeated SIGTERMs, which
// service managers and wrappers may send, keep the graceful stop going.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-ch
		cancel()
		for sig := range ch {
			if sig == syscall.SIGINT {
				fmt.Fprintln(os.Stderr, "k8s-master: second interrupt, exiting without a graceful stop")
				os.Exit(130)
			}
		}
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

// startupGC lets the heap grow more between collections while the control
// plane starts (a burst of allocation: OpenAPI specs, caches, bootstrap
// objects) and restores the usual target afterwards, returning the start-up
// garbage to the OS. An operator's GOGC is left alone.
func startupGC() (end func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	prev := debug.SetGCPercent(400)
	return func() {
		debug.SetGCPercent(prev)
		go debug.FreeOSMemory()
	}
}

// startupProfile records a CPU profile of start-up, until the control plane
// is ready, into $K8S_MASTER_STARTUP_CPUPROFILE when that is set: the tool
// for finding what makes start-up slow.
func startupProfile() (stop func()) {
	path := os.Getenv("K8S_MASTER_STARTUP_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "warning: no start-up profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "warning: no start-up profile:", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

func indentJoin(err error) error {
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		return err
	}
	msg := ""
	for i, e := range joined.Unwrap() {
		if i > 0 {
			msg += "\n  "
		}
		msg += flagMessage(e)
	}
	return errors.New(msg)
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of k8s-master and what it embeds",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			v := version.Local()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "k8s-master: %s\n", v.Release)
			fmt.Fprintf(out, "kubernetes: %s\n", v.Kubernetes)
			fmt.Fprintf(out, "etcd:       %s\n", v.Etcd)
			fmt.Fprintf(out, "go:         %s\n", runtime.Version())
		},
	}
}
