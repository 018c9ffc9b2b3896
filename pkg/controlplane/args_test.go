package controlplane

import (
	"slices"
	"testing"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	"github.com/k8s-master/k8s-master/pkg/config"
)

func testConfig(adv string) *config.Config {
	c := config.Default()
	c.DataDir, c.Name, c.AdvertiseAddress = "/var/lib/k8s-master", "m1", adv
	c.PodCIDR = "10.244.0.0/16"
	return &c
}

func parse(t *testing.T, name string, nfs cliflag.NamedFlagSets, args []string) {
	t.Helper()
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	for _, f := range nfs.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		t.Errorf("%s no longer takes our flags: %v", name, err)
	}
}

// Every flag we pass still exists in the Kubernetes release we build with
// (a removed flag would only show when a master starts).
func TestComponentsTakeOurFlags(t *testing.T) {
	c := testConfig("192.0.2.10")
	parse(t, "kube-apiserver", apiserveroptions.NewServerRunOptions().Flags(), apiServerArgs(c))
	kcm, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		t.Fatal(err)
	}
	parse(t, "kube-controller-manager", kcm.Flags(kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()), controllerManagerArgs(c))
	parse(t, "kube-scheduler", *scheduleroptions.NewOptions().Flags, schedulerArgs(c))
}

// The apiserver refuses a loopback address for the kubernetes Service's
// endpoints (1.37); a loopback master reconciles none.
func TestLoopbackMasterReconcilesNoEndpoints(t *testing.T) {
	const none = "--endpoint-reconciler-type=none"
	if args := apiServerArgs(testConfig("127.0.0.1")); !slices.Contains(args, none) {
		t.Errorf("loopback master: %s missing", none)
	}
	if args := apiServerArgs(testConfig("192.0.2.10")); slices.Contains(args, none) {
		t.Errorf("master on 192.0.2.10: %s given", none)
	}
}

// The in-process controller-manager and scheduler are not throttled like
// remote clients: the rate limit we pass reaches the client configuration
// each one builds.
func TestInProcessClientsRateLimit(t *testing.T) {
	c := testConfig("192.0.2.10")
	kcm, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		t.Fatal(err)
	}
	parse(t, "kube-controller-manager", kcm.Flags(kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()), controllerManagerArgs(c))
	if cc := kcm.Generic.ClientConnection; cc.QPS != 200 || cc.Burst != 400 {
		t.Errorf("controller-manager client: qps %v burst %d, want 200 and 400", cc.QPS, cc.Burst)
	}
	sched := scheduleroptions.NewOptions()
	parse(t, "kube-scheduler", *sched.Flags, schedulerArgs(c))
	// ApplyDeprecated copies these to the component configuration only
	// when the flags were given (and no configuration file).
	dep := sched.Flags.FlagSet("deprecated")
	if !dep.Changed("kube-api-qps") || !dep.Changed("kube-api-burst") || sched.Deprecated.QPS != 200 || sched.Deprecated.Burst != 400 {
		t.Errorf("scheduler client: qps %v burst %d, want 200 and 400 given as flags", sched.Deprecated.QPS, sched.Deprecated.Burst)
	}
}
