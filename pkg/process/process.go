// Package process holds the state that Kubernetes, gRPC and cobra keep in
// package variables, which is therefore shared by everything in this
// process. kube-apiserver, kube-controller-manager and kube-scheduler each
// expect a process of their own and set this state from their cobra
// commands, which k8s-master does not run: pkg/controlplane builds them at
// the options level, three in one process. Each such setting is made here,
// once, with why it is process-wide and which component relies on it.
//
// When each function is called:
//
//	SetupCommandLine  cmd/k8s-master, before its commands are built
//	SetupAdmin        cmd/k8s-master, before an admin command (token,
//	                  status, member, leave) dials etcd
//	SetupMaster       a master, before any component is built
//	SetComponentGlobals  pkg/controlplane, once kube-apiserver's flags are
//	                  parsed (they carry FeatureGates)
//	RegisterConfigz, UnregisterConfigz  pkg/controlplane, each time the
//	                  scheduler or controller-manager (re)starts
//	RegisterMetrics   packages adding their own metrics (pkg/vip)
package process

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"
	"google.golang.org/grpc/grpclog"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	basecompatibility "k8s.io/component-base/compatibility"
	"k8s.io/component-base/configz"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/k8s-master/k8s-master/pkg/logging"
)

// SetupCommandLine gives the program an empty pflag.CommandLine.
//
// Kubernetes packages register flags on the global pflag.CommandLine when
// they are imported (component-base's verflag adds --version), and cobra
// merges pflag.CommandLine into the root command's persistent flags, so
// they would become k8s-master's flags. None of them applies here. Relied
// on by cmd/k8s-master's commands.
func SetupCommandLine() {
	pflag.CommandLine = pflag.NewFlagSet("k8s-master", pflag.ContinueOnError)
}

// SetupAdmin prepares the process for an admin command: gRPC's own log is
// dropped.
//
// grpclog's logger is global to the gRPC package. Importing
// k8s.io/apiserver's etcd3 storage (which kube-apiserver does) points it at
// klog, which an admin command leaves on standard error: gRPC's connection
// chatter (a member down is reported in the command's output anyway) would
// reach the operator's terminal. Relied on by the etcd clients of
// pkg/cluster's Admin. gRPC asks for this before any gRPC call.
func SetupAdmin() {
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
}

// SetupMaster sets what a master process needs before any component is
// built: klog and etcd's zap logger write to logFile ("-" is standard
// error) at verbosity (pkg/logging). The caller closes the returned sink
// when the master has stopped.
//
// klog's configuration (verbosity, output) is package state that all three
// Kubernetes components log through; their own logging options
// (logsapi.ValidateAndApply in their cobra commands) are never applied, so
// this is the only place klog is configured. gRPC logs to klog too (see
// SetupAdmin). etcd's zap logger is handed to the member, not made global.
func SetupMaster(logFile string, verbosity int) (*logging.Sink, error) {
	return logging.Setup(logFile, verbosity)
}

// FeatureGates is the --feature-gates value pkg/controlplane passes to
// kube-apiserver. ControllerManagerReleaseLeaderElectionLockOnExit lets the
// in-process controller-manager return (instead of exiting the whole
// process) when it loses its lease, and hand the lease over at once on a
// graceful stop.
//
// The gates are process-wide: kube-apiserver, kube-controller-manager and
// kube-scheduler all register with the one ComponentGlobalsRegistry
// (k8s.io/apiserver's compatibility.DefaultComponentGlobalsRegistry, backed
// by utilfeature.DefaultMutableFeatureGate). Only kube-apiserver parses
// them; the other two never call Set (their SetFallback does nothing once
// it ran), so this gate, although it is the controller-manager's, reaches it
// through the apiserver's flags.
const FeatureGates = "ControllerManagerReleaseLeaderElectionLockOnExit=true"

// SetComponentGlobals is what kube-apiserver's and kube-controller-manager's
// cobra commands set before running (their PersistentPreRunE): r, the
// process's ComponentGlobalsRegistry, takes the feature gates and emulated
// version parsed from the apiserver's flags; client-go's default warning
// handler is silenced. Call it after parsing kube-apiserver's flags and
// before completing its options.
//
// The warning handler is a client-go global used by every client in the
// process that sets none of its own: kube-apiserver's loopback clients
// would log the warnings the server itself issues, and the
// controller-manager watches APIs generically, deprecated ones included.
func SetComponentGlobals(r basecompatibility.ComponentGlobalsRegistry) error {
	if err := r.Set(); err != nil {
		return err
	}
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	return nil
}

// RegisterConfigz publishes a component's configuration at /configz under
// name, replacing what an earlier run registered.
//
// configz keeps one map per process, served at /configz by both the
// controller-manager's and the scheduler's secure port (the controller-
// manager base handler installs it); configz.New refuses a name already
// there, which a component restarted in this process (pkg/controlplane's
// Supervised) would hit. Relied on by kube-scheduler, whose run is
// pkg/controlplane's copy of upstream's.
func RegisterConfigz(name string, cfg runtime.Object) error {
	configz.Delete(name)
	cz, err := configz.New(name)
	if err != nil {
		return fmt.Errorf("unable to register configz: %w", err)
	}
	if err := cz.Set(cfg); err != nil {
		return fmt.Errorf("unable to set configz: %w", err)
	}
	return nil
}

// UnregisterConfigz removes name from /configz, for a component whose run
// registers it (kube-controller-manager's app.Run does, and fails on a name
// already there): called before each run. See RegisterConfigz.
func UnregisterConfigz(name string) { configz.Delete(name) }

// RegisterMetrics adds metrics to the process's legacy registry.
//
// The legacy registry (component-base's legacyregistry) is one Prometheus
// registry per process: kube-apiserver serves it at /metrics (and the
// controller-manager and scheduler on their own ports), so metrics added
// here appear there. Registering a metric twice panics; callers register
// once (pkg/vip does so on its first Manager).
func RegisterMetrics(ms ...metrics.Registerable) {
	legacyregistry.MustRegister(ms...)
}
