package systemd

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Service drives one systemd unit through systemctl.
type Service struct {
	// Unit is the unit name, e.g. "k8s-master.service".
	Unit string
	// RuntimeDir holds runtime drop-ins, which vanish at reboot
	// (default /run/systemd/system).
	RuntimeDir string
	// Out receives progress lines.
	Out io.Writer
	// Poll is how often the service's status line is read (default 200 ms).
	Poll time.Duration
}

func (s *Service) systemctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			return fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
		}
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return nil
}

// Active reports whether the unit is active (running, or starting or
// stopping).
func (s *Service) Active(ctx context.Context) bool {
	return exec.CommandContext(ctx, "systemctl", "is-active", "--quiet", s.Unit).Run() == nil
}

// Stop stops the unit and waits until it has stopped.
func (s *Service) Stop(ctx context.Context) error {
	return s.systemctl(ctx, "stop", s.Unit)
}

// StatusText is the unit's latest STATUS= line.
func (s *Service) StatusText(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "systemctl", "show", "--property=StatusText", "--value", s.Unit).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// dropIn is the runtime drop-in that makes the unit's next start run a
// different command line.
func (s *Service) dropIn() string {
	dir := s.RuntimeDir
	if dir == "" {
		dir = "/run/systemd/system"
	}
	return filepath.Join(dir, s.Unit+".d", "50-k8s-master-init.conf")
}

// StartWith enables the unit (so it starts at boot, with its own command
// line) and starts it once with argv instead, through a runtime drop-in
// that is removed as soon as the start finished: the process that creates
// the cluster is the service that keeps running it, and after a reboot
// the unit's own command runs. systemctl start returns when the service
// reported READY=1 (Type=notify) or failed; meanwhile the service's
// STATUS= lines are printed as progress.
func (s *Service) StartWith(ctx context.Context, argv []string) error {
	out := s.Out
	if out == nil {
		out = io.Discard
	}
	poll := s.Poll
	if poll == 0 {
		poll = 200 * time.Millisecond
	}
	path := s.dropIn()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	unit := "# Written by k8s-master init for its first start; removed once started.\n[Service]\nExecStart=\nExecStart=" + ExecQuote(argv) + "\n"
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		return err
	}
	cleanup := func() {
		os.Remove(path)
		os.Remove(filepath.Dir(path)) // only if empty
		if err := s.systemctl(context.WithoutCancel(ctx), "daemon-reload"); err != nil {
			fmt.Fprintf(out, "warning: %v\n", err)
		}
	}
	if err := s.systemctl(ctx, "daemon-reload"); err != nil {
		cleanup()
		return err
	}
	err := s.startFollowing(ctx, out, poll)
	cleanup()
	return err
}

func (s *Service) startFollowing(ctx context.Context, out io.Writer, poll time.Duration) error {
	if err := s.systemctl(ctx, "enable", s.Unit); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- s.systemctl(ctx, "start", s.Unit) }()
	last := ""
	show := func() {
		if st := s.StatusText(ctx); st != "" && st != last {
			fmt.Fprintf(out, "  %s\n", st)
			last = st
		}
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			show()
			if err != nil {
				return fmt.Errorf("the %s service did not become ready: %w; see: journalctl -u %s", s.Unit, err, s.Unit)
			}
			if !s.Active(ctx) {
				return fmt.Errorf("the %s service stopped right after starting; see: journalctl -u %s", s.Unit, s.Unit)
			}
			return nil
		case <-tick.C:
			show()
		}
	}
}

// ExecQuote quotes argv for a unit file's ExecStart= line: each word in
// double quotes with backslash escapes, and systemd's specifiers (%) and
// variable expansions ($) doubled so they stay literal. A plain executable
// path stays bare.
func ExecQuote(argv []string) string {
	words := make([]string, len(argv))
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "%", "%%", "$", "$$", "\n", `\n`)
	for i, a := range argv {
		if i == 0 && a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+") == "" {
			words[i] = a // a plain executable path
			continue
		}
		words[i] = `"` + r.Replace(a) + `"`
	}
	return strings.Join(words, " ")
}

// Installed reports whether systemd knows the unit (its file is installed).
func (s *Service) Installed(ctx context.Context) bool {
	out, err := exec.CommandContext(ctx, "systemctl", "show", "--property=LoadState", "--value", s.Unit).Output()
	return err == nil && strings.TrimSpace(string(out)) == "loaded"
}

// Disable stops the unit, waiting until it has stopped, and disables it.
func (s *Service) Disable(ctx context.Context) error {
	return s.systemctl(ctx, "disable", "--now", s.Unit)
}
