package testkit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Systemctl is a fake systemctl first on PATH for the rest of a test. It
// appends each call's arguments to Dir/calls; "start" also appends the
// runtime drop-ins found under RuntimeDir (so a test sees the ExecStart=
// the unit would run) and, for each directory in ListOnStart, the mode and
// path of its files as "file MODE PATH" (what the unit would find there).
// "start" then plays Progress as the unit's status line, each line kept
// until a "show" has read it, so a slow poller still sees every line.
// "is-active" succeeds once a start succeeded.
//
// Flag files change the outcome: after Fail("start") the start fails with
// systemd's "Job for UNIT failed." on stderr; after Fail("exits-at-once")
// the start succeeds but the unit is not active afterwards.
type Systemctl struct {
	Dir        string
	RuntimeDir string
}

// SystemctlOptions shapes what FakeSystemctl's "start" does.
type SystemctlOptions struct {
	Progress    []string
	ListOnStart []string
}

// FakeSystemctl puts a fake systemctl on PATH (see Systemctl).
func FakeSystemctl(t testing.TB, o SystemctlOptions) *Systemctl {
	t.Helper()
	dir := t.TempDir()
	s := &Systemctl{Dir: dir, RuntimeDir: filepath.Join(dir, "run")}
	var progress, list []string
	for _, p := range o.Progress {
		progress = append(progress, shellQuote(p))
	}
	for _, p := range o.ListOnStart {
		list = append(list, shellQuote(p))
	}
	script := `#!/bin/sh
d=` + shellQuote(dir) + `
echo "$*" >> "$d/calls"
case "$1" in
show)
  cat "$d/status" 2>/dev/null
  cp "$d/status" "$d/shown" 2>/dev/null
  exit 0 ;;
is-active) [ -f "$d/active" ]; exit $? ;;
start)
  cat "$d"/run/*.service.d/*.conf >> "$d/calls" 2>/dev/null
  for l in ` + strings.Join(list, " ") + `; do
    for f in "$l"/*; do [ -e "$f" ] && stat -c 'file %a %n' "$f" >> "$d/calls"; done
  done
  for s in ` + strings.Join(progress, " ") + `; do
    echo "$s" > "$d/status.new" && mv "$d/status.new" "$d/status"
    # Wait (at most 30 s) until a show has read it.
    i=0
    while [ "$(cat "$d/shown" 2>/dev/null)" != "$s" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  done
  if [ -f "$d/fail-start" ]; then echo "Job for $2 failed." >&2; exit 1; fi
  [ -f "$d/exits-at-once" ] || touch "$d/active" ;;
esac
exit 0
`
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return s
}

// Fail makes later starts fail: what is "start" (the job fails) or
// "exits-at-once" (the unit stops right after starting).
func (s *Systemctl) Fail(t testing.TB, what string) {
	t.Helper()
	name := map[string]string{"start": "fail-start", "exits-at-once": "exits-at-once"}[what]
	if name == "" {
		t.Fatalf("FakeSystemctl: unknown failure %q", what)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Calls is what systemctl was called with so far, one call a line, with
// what "start" logs.
func (s *Systemctl) Calls() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "calls"))
	return string(b)
}

// ResetCalls forgets the calls so far.
func (s *Systemctl) ResetCalls() { os.Remove(filepath.Join(s.Dir, "calls")) }

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
