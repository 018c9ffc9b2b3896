package upgrade

import (
	"errors"
	"strings"
	"testing"

	"github.com/k8s-master/k8s-master/pkg/version"
)

func v(release, kube string) version.Versions {
	return version.Versions{Release: release, Kubernetes: kube, Etcd: "v3.7.0"}
}

func peer(name string, vs version.Versions, reachable bool) Peer {
	return Peer{Name: name, Versions: vs, Voter: true, Reachable: reachable, Problem: "connection refused"}
}

func TestCheck(t *testing.T) {
	old, cur, next, skip := v("v0.1.0", "v1.36.3"), v("v0.2.0", "v1.37.2"), v("v0.3.0", "v1.38.0"), v("v0.4.0", "v1.39.0")
	patchNewer := v("v0.2.1", "v1.37.3")
	unknown := version.Versions{Release: "v0.1.0"} // registered without a Kubernetes version
	cases := []struct {
		name     string
		in       Input
		refusal  string // "" = allowed
		wantNote string
	}{
		{"plain restart, even with the others down", Input{Name: "m1", Self: cur, Previous: &cur,
			Peers: []Peer{peer("m2", cur, false), peer("m3", cur, false)}}, "", ""},
		{"upgrade by one minor, all up", Input{Name: "m1", Self: cur, Previous: &old,
			Peers: []Peer{peer("m2", old, true), peer("m3", old, true)}}, "", ""},
		{"join of a new master at the cluster's version", Input{Name: "m4", Self: cur,
			Peers: []Peer{peer("m1", cur, true)}}, "", ""},
		{"two minors at once (own data)", Input{Name: "m1", Self: skip, Previous: &cur,
			Peers: []Peer{peer("m2", next, true)}}, "m1 (its last run) runs v1.37.2", ""},
		{"two minors at once (a peer)", Input{Name: "m1", Self: skip, Previous: &next,
			Peers: []Peer{peer("m2", cur, true)}}, "upgrade every master to a v1.38 release first", ""},
		{"downgrade of this master", Input{Name: "m1", Self: cur, Previous: &next,
			Peers: []Peer{peer("m2", cur, true)}}, "m1 (its last run) runs the newer", ""},
		{"downgrade below an upgraded peer", Input{Name: "m2", Self: old, Previous: &cur,
			Peers: []Peer{peer("m1", cur, true)}}, "does not go back", ""},
		{"joiner older than the cluster", Input{Name: "m4", Self: cur,
			Peers: []Peer{peer("m1", next, true)}}, "m1 runs the newer", ""},
		{"patch downgrade needs force", Input{Name: "m1", Self: cur, Previous: &patchNewer,
			Peers: []Peer{peer("m2", cur, true)}}, "--force-upgrade to go back within Kubernetes 1.37", ""},
		{"patch downgrade forced", Input{Name: "m1", Self: cur, Previous: &patchNewer, Force: true,
			Peers: []Peer{peer("m2", cur, true)}}, "", "going back"},
		{"minor downgrade not even forced", Input{Name: "m1", Self: cur, Previous: &next, Force: true,
			Peers: []Peer{peer("m2", cur, true)}}, "does not go back", ""},
		{"upgrade with another master down", Input{Name: "m1", Self: next, Previous: &cur,
			Peers: []Peer{peer("m2", cur, true), peer("m3", cur, false)}}, "while m3 (connection refused) is down", ""},
		{"upgrade with another master down, forced", Input{Name: "m1", Self: next, Previous: &cur, Force: true,
			Peers: []Peer{peer("m2", cur, true), peer("m3", cur, false)}}, "", "cannot be reached"},
		{"a down learner does not count", Input{Name: "m1", Self: next, Previous: &cur,
			Peers: []Peer{peer("m2", cur, true), {Name: "m3", Voter: false}}}, "", ""},
		{"no other master answers: whole cluster starting", Input{Name: "m1", Self: next, Previous: &cur,
			Peers: []Peer{peer("m2", cur, false), peer("m3", cur, false)}}, "", "no other master answers"},
		{"peer of unknown version is not compared", Input{Name: "m1", Self: cur, Previous: &old,
			Peers: []Peer{peer("m2", unknown, true)}}, "", ""},
		{"unstamped build skips the version checks", Input{Name: "m1", Self: v("dev", "v0.0.0-master+$Format:%H$"), Previous: &next,
			Peers: []Peer{peer("m2", next, false), peer("m3", next, true)}}, "", "checks skipped"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			notes, err := Check(tc.in)
			var r *Refusal
			switch {
			case tc.refusal == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refusal != "" && !errors.As(err, &r):
				t.Fatalf("allowed (%v), want a refusal containing %q", err, tc.refusal)
			case tc.refusal != "" && !strings.Contains(err.Error(), tc.refusal):
				t.Fatalf("refusal %q does not contain %q", err, tc.refusal)
			}
			if tc.wantNote != "" && !strings.Contains(strings.Join(notes, "\n"), tc.wantNote) {
				t.Errorf("notes %q do not contain %q", notes, tc.wantNote)
			}
		})
	}
}

func TestChanging(t *testing.T) {
	a := v("v0.2.0", "v1.37.2")
	b := a
	b.Release = "v0.2.1"
	if (Input{Self: a, Previous: &a}).Changing() {
		t.Error("same versions count as a change")
	}
	if !(Input{Self: b, Previous: &a}).Changing() || !(Input{Self: a}).Changing() {
		t.Error("a new release or a first run does not count as a change")
	}
}

// TestRefusalRetry: only the quorum refusal heals by itself (the unit
// retries it); version refusals need another binary.
func TestRefusalRetry(t *testing.T) {
	cur, next, skip := v("v0.2.0", "v1.37.2"), v("v0.3.0", "v1.38.0"), v("v0.4.0", "v1.39.0")
	for _, tc := range []struct {
		in    Input
		retry bool
	}{
		{Input{Name: "m1", Self: skip, Previous: &cur, Peers: []Peer{peer("m2", cur, true)}}, false},
		{Input{Name: "m1", Self: cur, Previous: &next, Peers: []Peer{peer("m2", cur, true)}}, false},
		{Input{Name: "m1", Self: next, Previous: &cur, Peers: []Peer{peer("m2", cur, true), peer("m3", cur, false)}}, true},
	} {
		_, err := Check(tc.in)
		var r *Refusal
		if !errors.As(err, &r) || r.Retry != tc.retry {
			t.Errorf("%v: refusal %v, retry %v; want retry %v", tc.in.Self, err, r != nil && r.Retry, tc.retry)
		}
	}
}

func TestCheckRestore(t *testing.T) {
	self := version.Versions{Release: "v0.2.0", Kubernetes: "v1.37.2", Etcd: "3.7.0"}
	for _, tc := range []struct {
		name     string
		archived version.Versions
		refusal  string
	}{
		{"same release", self, ""},
		{"previous minor", version.Versions{Release: "v0.1.0", Kubernetes: "v1.36.3"}, ""},
		{"newer release", version.Versions{Release: "v0.3.0", Kubernetes: "v1.37.2"}, "the snapshot's cluster runs the newer"},
		{"newer Kubernetes minor", version.Versions{Release: "v0.3.0", Kubernetes: "v1.38.0"}, "the snapshot's cluster runs the newer"},
		{"two minors behind", version.Versions{Release: "v0.0.9", Kubernetes: "v1.35.1"}, "one minor version at a time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckRestore(self, tc.archived)
			switch {
			case tc.refusal == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refusal != "" && (err == nil || !strings.Contains(err.Error(), tc.refusal) || !strings.Contains(err.Error(), "nothing was written")):
				t.Fatalf("got %v, want a refusal with %q that says nothing was written", err, tc.refusal)
			}
		})
	}
}
