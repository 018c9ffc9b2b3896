// Package service hands a master to the k8s-master systemd unit. On a host
// that runs systemd with the unit installed, init and join do not run the
// master themselves: they start the unit once with their own command line
// (HandOver) and follow its progress until the control plane is ready, so
// that the process that creates the cluster is the service that keeps
// running it. A master the unit runs reports its progress and readiness to
// systemd (Notify, for Type=notify).
package service

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/systemd"
)

// Unit is the systemd unit the packages install.
const Unit = "k8s-master.service"

// defaultTokenDir holds a join token for the service's first start.
const defaultTokenDir = "/run/k8s-master"

// Use tells whether init or join hands the master to the unit: on a host
// that runs systemd with the unit installed, unless foreground (the
// --foreground flag) or already running under systemd.
func Use(ctx context.Context, foreground bool) bool {
	if foreground || os.Getenv("NOTIFY_SOCKET") != "" || !systemd.Booted() {
		return false
	}
	return (&systemd.Service{Unit: Unit}).Installed(ctx)
}

// notLasting are flags that the service would lose after its first start:
// it reads them from the config file at every start, while what init
// records in the data directory (name, addresses, ports, ranges) lasts.
// The add-on settings are not recorded either: given only to init, they
// would apply at the first start and be undone at the next.
var notLasting = []string{"data-dir", "log-file", "v", "image-repository", "disable-addon", "cluster-dns"}

// CheckFlags refuses command-line settings in fs (init's or join's parsed
// flags) that the service would not keep across restarts.
func CheckFlags(fs *pflag.FlagSet) error {
	if f := fs.Lookup("config"); f != nil && f.Changed && f.Value.String() != config.DefaultConfigFile {
		return fmt.Errorf("the k8s-master service reads %s; put the settings there, or run init --foreground to use --config %s", config.DefaultConfigFile, f.Value.String())
	}
	for _, name := range notLasting {
		if fs.Changed(name) {
			return fmt.Errorf("--%s would not last: the k8s-master service reads it from %s at every start; set %q there, or run init --foreground", name, config.DefaultConfigFile, name)
		}
	}
	return nil
}

// Args is the command line the service's first start runs: exe's init or
// join (verb) in the foreground with the flags given in fs. The service
// reads the config file itself, so call it before the file's keys are
// marked as given; a join token goes through a file (HandOver.Token).
func Args(exe, verb string, fs *pflag.FlagSet) []string {
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

// HandOver is one init or join run inside the service.
type HandOver struct {
	// Verb is "init", "join" or "restore".
	Verb string
	// Argv is the first start's command line (Args).
	Argv []string
	// Token is join's token, handed over in a 0600 file, never on a
	// command line, which every user can read.
	Token string
	// Config is the completed configuration; its paths go into messages.
	Config *config.Config
	// Out receives the progress.
	Out io.Writer

	// RuntimeDir is where the one-off drop-in goes ("" for systemd's
	// /run/systemd/system) and TokenDir where the token file goes (""
	// for /run/k8s-master); tests move them.
	RuntimeDir string
	TokenDir   string
}

// Run enables the unit and starts it once with h.Argv, printing its
// progress until the control plane is ready. A start that fails leaves
// the unit stopped and disabled.
func (h *HandOver) Run(ctx context.Context) error {
	out := h.Out
	if out == nil {
		out = io.Discard
	}
	svc := &systemd.Service{Unit: Unit, Out: out, RuntimeDir: h.RuntimeDir}
	if svc.Active(ctx) {
		return fmt.Errorf("the %s service is already running (systemctl status %s); it runs the master in %s. To start over: k8s-master reset", Unit, Unit, h.Config.DataDir)
	}
	argv := h.Argv
	if h.Token != "" {
		dir := h.TokenDir
		if dir == "" {
			dir = defaultTokenDir
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		tokenFile := filepath.Join(dir, "join-token")
		if err := fsutil.WriteFileAtomic(tokenFile, []byte(h.Token+"\n"), 0o600); err != nil {
			return err
		}
		// Removed once the first start is over: later starts are `start`.
		defer os.Remove(tokenFile)
		argv = append(argv[:len(argv):len(argv)], "--token-file="+tokenFile)
	}
	t := time.Now()
	fmt.Fprintf(out, "k8s-master: running %s in the %s systemd service (data in %s); run %s --foreground to keep it in this terminal\n", h.Verb, Unit, h.Config.DataDir, h.Verb)
	if err := svc.StartWith(ctx, argv); err != nil {
		// Otherwise it would retry every few seconds, now with `start`
		// on a data directory that may hold no cluster.
		if derr := svc.Disable(context.WithoutCancel(ctx)); derr != nil {
			fmt.Fprintf(out, "warning: %v\n", derr)
		}
		return fmt.Errorf("%w; the service is stopped and disabled again", err)
	}
	fmt.Fprintf(out, "ready in %.1f s; the service is enabled and starts at boot\n", time.Since(t).Seconds())
	fmt.Fprintf(out, "  kubectl --kubeconfig %s get --raw /readyz\n", h.Config.Layout().AdminKubeconfig())
	fmt.Fprintf(out, "  status: systemctl status %s; logs: journalctl -u %s and %s\n", Unit, Unit, h.Config.LogFile)
	if h.Verb != "join" {
		// init and restore make a token for the next masters; the
		// service printed it to its journal, the operator looks here.
		if tok, err := os.ReadFile(h.Config.Layout().Token()); err == nil {
			fmt.Fprintf(out, "join token (valid 24 h, also in %s):\n  %s", h.Config.Layout().Token(), tok)
			fmt.Fprintln(out, "add a master: k8s-master join --token <token>")
		}
	}
	return nil
}

// Notify wraps the progress output of a master started by systemd
// (Type=notify): each progress line becomes the unit's STATUS, ready()
// sends READY=1, and STOPPING=1 goes out when ctx ends. Outside systemd it
// changes nothing.
func Notify(ctx context.Context, out io.Writer) (io.Writer, func()) {
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
