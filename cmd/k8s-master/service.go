package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/systemd"
)

// serviceUnit is the systemd unit the packages install.
const serviceUnit = "k8s-master.service"

// serviceRuntimeDir is where the one-off drop-in for init goes ("" for
// systemd's /run/systemd/system; tests point it elsewhere).
var serviceRuntimeDir = ""

// notifyService wraps the progress output of a master started by systemd
// (Type=notify): each progress line becomes the unit's STATUS, ready()
// sends READY=1, and STOPPING=1 goes out when ctx ends. Outside systemd it
// changes nothing.
func notifyService(ctx context.Context, out io.Writer) (io.Writer, func()) {
	if !systemd.Claim() {
		return out, func() {}
	}
	go func() {
		<-ctx.Done()
		_, _ = systemd.Notify("STOPPING=1\nSTATUS=stopping")
	}()
	return &systemd.StatusWriter{W: out}, func() {
		if _, err := systemd.Notify("READY=1\nSTATUS=running, control plane ready"); err != nil {
			fmt.Fprintln(os.Stderr, "warning: cannot tell systemd the master is ready:", err)
		}
	}
}

var foreground bool

func addForegroundFlag(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&foreground, "foreground", false, "run the master in this process even on a host with systemd, instead of handing it to the k8s-master service")
}

// useService tells whether init hands the master to the systemd unit: on a
// host that runs systemd with the unit installed, unless --foreground or
// already running under systemd.
func useService(ctx context.Context) bool {
	if foreground || os.Getenv("NOTIFY_SOCKET") != "" || !systemd.Booted() {
		return false
	}
	return (&systemd.Service{Unit: serviceUnit}).Installed(ctx)
}

// notLasting are flags that the service would lose after its first start:
// it reads them from the config file at every start, while what init
// records in the data directory (name, addresses, ports, ranges) lasts.
var notLasting = []string{"data-dir", "log-file", "v"}

// checkServiceFlags refuses command-line settings that the service would
// not keep across restarts.
func checkServiceFlags(fs *pflag.FlagSet) error {
	if fs.Changed("config") && configFile != config.DefaultConfigFile {
		return fmt.Errorf("the k8s-master service reads %s; put the settings there, or run init --foreground to use --config %s", config.DefaultConfigFile, configFile)
	}
	for _, name := range notLasting {
		if fs.Changed(name) {
			return fmt.Errorf("--%s would not last: the k8s-master service reads it from %s at every start; set %q there, or run init --foreground", name, config.DefaultConfigFile, name)
		}
	}
	return nil
}

// serviceArgs is the command line the service's first start runs: this
// binary's init or join in the foreground with the flags given here (the
// service reads the config file itself; a join token goes through a file).
func serviceArgs(exe, verb string, fs *pflag.FlagSet) []string {
	argv := []string{exe, verb, "--foreground"}
	fs.Visit(func(f *pflag.Flag) {
		switch f.Name {
		case "foreground", "config", "token", "token-file":
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				argv = append(argv, "--"+f.Name+"="+v)
			}
			return
		}
		argv = append(argv, "--"+f.Name+"="+f.Value.String())
	})
	return argv
}

// tokenDir holds a join token for the service's first start (tests move it).
var tokenDir = "/run/k8s-master"

// initService creates the cluster inside the k8s-master service.
func initService(cmd *cobra.Command, c *config.Config) error {
	return serviceRun(cmd, c, "init", "")
}

// serviceRun runs init or join inside the k8s-master service: the unit is
// enabled and started once with this command's settings, and this command
// follows its progress until the control plane is ready. A join token is
// handed over in a 0600 file (never on a command line, which every user
// can read), removed once the first start is over.
func serviceRun(cmd *cobra.Command, c *config.Config, verb, token string) error {
	fs := cmd.Flags()
	if err := checkServiceFlags(fs); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	argv := serviceArgs(exe, verb, fs) // before the file marks its keys as given
	if err := completeConfig(cmd, c); err != nil {
		return err
	}
	if token != "" {
		if err := os.MkdirAll(tokenDir, 0o700); err != nil {
			return err
		}
		tokenFile := filepath.Join(tokenDir, "join-token")
		if err := fsutil.WriteFileAtomic(tokenFile, []byte(token+"\n"), 0o600); err != nil {
			return err
		}
		defer os.Remove(tokenFile)
		argv = append(argv, "--token-file="+tokenFile)
	}
	ctx, cancel := signalContext()
	defer cancel()
	out := cmd.OutOrStdout()
	svc := &systemd.Service{Unit: serviceUnit, Out: out, RuntimeDir: serviceRuntimeDir}
	if svc.Active(ctx) {
		return fmt.Errorf("the %s service is already running (systemctl status %s); it runs the master in %s. To start over: k8s-master reset", serviceUnit, serviceUnit, c.DataDir)
	}
	t := time.Now()
	fmt.Fprintf(out, "k8s-master: running %s in the %s systemd service (data in %s); run %s --foreground to keep it in this terminal\n", verb, serviceUnit, c.DataDir, verb)
	if err := svc.StartWith(ctx, argv); err != nil {
		// Otherwise it would retry every few seconds, now with `start`
		// on a data directory that may hold no cluster.
		if derr := svc.Disable(context.WithoutCancel(ctx)); derr != nil {
			fmt.Fprintf(out, "warning: %v\n", derr)
		}
		return fmt.Errorf("%w; the service is stopped and disabled again", err)
	}
	fmt.Fprintf(out, "ready in %.1f s; the service is enabled and starts at boot\n", time.Since(t).Seconds())
	fmt.Fprintf(out, "  kubectl --kubeconfig %s get --raw /readyz\n", c.AdminKubeconfig())
	fmt.Fprintf(out, "  status: systemctl status %s; logs: journalctl -u %s and %s\n", serviceUnit, serviceUnit, c.LogFile)
	return nil
}
