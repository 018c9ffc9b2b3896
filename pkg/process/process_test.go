package process

import (
	"testing"

	"github.com/spf13/pflag"
	"k8s.io/component-base/configz"
	kubeschedulerv1 "k8s.io/kube-scheduler/config/v1"
)

// A component restarted in this process registers its /configz entry
// again; upstream's configz.New alone refuses that.
func TestRegisterConfigzTwice(t *testing.T) {
	const name = "process-test"
	defer configz.Delete(name)
	cfg := &kubeschedulerv1.KubeSchedulerConfiguration{}
	cfg.SetGroupVersionKind(kubeschedulerv1.SchemeGroupVersion.WithKind("KubeSchedulerConfiguration"))
	for i := range 2 {
		if err := RegisterConfigz(name, cfg); err != nil {
			t.Fatalf("registration %d: %v", i+1, err)
		}
	}
	UnregisterConfigz(name)
	if _, err := configz.New(name); err != nil {
		t.Fatalf("after UnregisterConfigz: %v", err)
	}
}

// Flags Kubernetes packages put on pflag.CommandLine (verflag's --version)
// are gone afterwards.
func TestSetupCommandLine(t *testing.T) {
	saved := pflag.CommandLine
	defer func() { pflag.CommandLine = saved }()
	pflag.CommandLine.Bool("process-test-flag", false, "")
	SetupCommandLine()
	if pflag.CommandLine.Lookup("process-test-flag") != nil {
		t.Fatal("a flag registered before SetupCommandLine is still there")
	}
}
