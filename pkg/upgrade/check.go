// Package upgrade decides whether a master may start a version other than
// the one it ran before: Kubernetes' skew policy (one minor at a time), no
// downgrade in a mixed cluster, and a quorum to spare while it restarts.
package upgrade

import (
	"fmt"
	"strings"

	"github.com/k8s-master/k8s-master/pkg/version"
)

// Peer is another master as the check sees it.
type Peer struct {
	Name string
	// Versions is what it registered; Kubernetes "" when unknown.
	Versions version.Versions
	Voter    bool
	// Reachable: its etcd member answered a status request.
	Reachable bool
	// Problem says why it is not reachable.
	Problem string
}

// Input is what the check knows.
type Input struct {
	// Name is this master's.
	Name string
	// Self is the binary about to start; Previous what this data directory
	// ran last (nil for a master that never ran).
	Self     version.Versions
	Previous *version.Versions
	Peers    []Peer
	// Force lets an upgrade proceed while another master is down, and a
	// patch-level downgrade within one minor version.
	Force bool
	// previousIs names Previous in refusals (default: this master's last
	// run).
	previousIs string
}

// Refusal is a refused start: nothing was changed, and the message says
// what to do. Retry is set when the same start can succeed later by
// itself (another master coming back); a version refusal needs another
// binary.
type Refusal struct {
	msg   string
	Retry bool
}

func (r *Refusal) Error() string { return r.msg }

// Changing tells whether the start runs other versions than last time.
func (in Input) Changing() bool {
	return in.Previous == nil || in.Previous.Kubernetes != in.Self.Kubernetes || in.Previous.Release != in.Self.Release
}

// Check returns nil when the start may go on, a *Refusal otherwise, and
// notes worth printing either way.
func Check(in Input) (notes []string, err error) {
	if !in.Changing() {
		return nil, nil
	}
	notes, skipped, err := checkVersions(in, "this master is unchanged: start the version it ran before")
	if err != nil || skipped {
		return notes, err
	}
	return checkQuorum(in, notes)
}

// CheckJoin decides whether a new master running self may join masters
// that registered peers' versions: the same skew and no-downgrade rules as
// a restart. The join service's quorum guard covers the rest.
func CheckJoin(name string, self version.Versions, peers []Peer) error {
	_, _, err := checkVersions(Input{Name: name, Self: self, Peers: peers}, "nothing was added to the cluster")
	return err
}

// CheckRestore decides whether this binary (self) may restore a snapshot
// taken by a master that ran archived: not from a newer release (this one
// may not understand its data), not across a skipped Kubernetes minor.
func CheckRestore(self, archived version.Versions) error {
	_, _, err := checkVersions(Input{Self: self, Previous: &archived, previousIs: "the snapshot's cluster"}, "nothing was written; restore with that release or a newer one")
	return err
}

// checkVersions applies the skew policy and the no-downgrade rule; after
// says, in a refusal, what state things were left in. skipped: a binary
// without a Kubernetes release version is not checked at all.
func checkVersions(in Input, after string) (notes []string, skipped bool, err error) {
	self, ok := in.Self.ParsedKubernetes()
	if !ok {
		return []string{fmt.Sprintf("this binary carries no Kubernetes release version (%q: built without make); version checks skipped", in.Self.Kubernetes)}, true, nil
	}
	// Every version the cluster's data has seen: this master's last and
	// the others'.
	type seen struct {
		who string
		v   version.Versions
	}
	var known []seen
	if in.Previous != nil {
		who := in.Name + " (its last run)"
		if in.previousIs != "" {
			who = in.previousIs
		}
		known = append(known, seen{who, *in.Previous})
	}
	for _, p := range in.Peers {
		if _, ok := p.Versions.ParsedKubernetes(); ok {
			known = append(known, seen{p.Name, p.Versions})
		}
	}
	for _, k := range known {
		kv, _ := k.v.ParsedKubernetes()
		if kv.Major() != self.Major() || self.Minor() > kv.Minor()+1 {
			return notes, false, &Refusal{msg: fmt.Sprintf("refusing to start Kubernetes %s: %s runs %s, and Kubernetes moves one minor version at a time; upgrade every master to a v%d.%d release first (%s)",
				in.Self.Kubernetes, k.who, k.v.Kubernetes, kv.Major(), kv.Minor()+1, after)}
		}
	}
	var newest *seen
	for i := range known {
		if c, _ := version.Compare(known[i].v, in.Self); c > 0 && (newest == nil || isNewer(known[i].v, newest.v)) {
			newest = &known[i]
		}
	}
	if newest != nil {
		nv, _ := newest.v.ParsedKubernetes()
		sameMinor := nv.Minor() == self.Minor()
		if !sameMinor || !in.Force {
			hint := "install that release or a newer one"
			if sameMinor {
				hint += ", or pass --force-upgrade to go back within Kubernetes " + in.Self.KubernetesMinor()
			}
			return notes, false, &Refusal{msg: fmt.Sprintf("refusing to start %s: %s runs the newer %s, and a master does not go back to an older version once the cluster has moved on; %s (%s)",
				in.Self, newest.who, newest.v, hint, after)}
		}
		notes = append(notes, fmt.Sprintf("going back from %s to %s (--force-upgrade)", newest.v, in.Self))
	}
	return notes, false, nil
}

// checkQuorum refuses an upgrade while another voting master is down.
func checkQuorum(in Input, notes []string) ([]string, error) {

	// While this master restarts, the others carry the quorum: all of them
	// must be up. When none answers, no serving cluster is at risk (a
	// power-up of every master at once) and the start goes on.
	var down, up []string
	voters := 0
	for _, p := range in.Peers {
		if !p.Voter {
			continue
		}
		voters++
		if p.Reachable {
			up = append(up, p.Name)
		} else {
			down = append(down, fmt.Sprintf("%s (%s)", p.Name, p.Problem))
		}
	}
	switch {
	case len(down) == 0:
	case len(up) == 0:
		notes = append(notes, fmt.Sprintf("no other master answers (%s); starting, since no serving cluster depends on this one", strings.Join(down, ", ")))
	case in.Force:
		notes = append(notes, fmt.Sprintf("upgrading although %s cannot be reached (--force-upgrade)", strings.Join(down, ", ")))
	default:
		verb := "is"
		if len(down) > 1 {
			verb = "are"
		}
		return notes, &Refusal{Retry: true, msg: fmt.Sprintf("refusing to upgrade %s while %s %s down: the cluster has no quorum to spare (%d of %d other voting masters up); bring them back first (this master is unchanged: start the version it ran before), or pass --force-upgrade",
			in.Name, strings.Join(down, ", "), verb, len(up), voters)}
	}
	return notes, nil
}

func isNewer(a, b version.Versions) bool {
	c, _ := version.Compare(a, b)
	return c > 0
}
