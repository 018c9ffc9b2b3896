package secretskey

import (
	"fmt"
	"time"
)

// Phase is how far a rotation has gone; each is recorded in etcd before the
// masters are asked to act on it, so a rerun resumes where a killed run
// stopped.
type Phase string

const (
	// PhaseAdding: the new key is in every master's configuration, after
	// the keys in use (it decrypts, nothing is written with it yet).
	PhaseAdding Phase = "new-key-added"
	// PhasePrimary: the new key comes first: every write uses it.
	PhasePrimary Phase = "new-key-primary"
	// PhaseRewritten: every stored object was rewritten and verified
	// under the new key.
	PhaseRewritten Phase = "objects-rewritten"
	// PhaseRemoving: the old keys are gone from the configuration.
	PhaseRemoving Phase = "old-key-removed"
)

// Rotation is a rotation under way.
type Rotation struct {
	From    string    `json:"from"`
	To      string    `json:"to"`
	Phase   Phase     `json:"phase"`
	Started time.Time `json:"started"`
}

// Desired is the configuration every master must run (in etcd at
// desiredKey).
type Desired struct {
	// Keys in provider order: Keys[0] encrypts every write.
	Keys     []SealedKey `json:"keys"`
	Rotation *Rotation   `json:"rotation,omitempty"`
	// LastRotated is when the last rotation finished.
	LastRotated time.Time `json:"lastRotated,omitzero"`
}

// Primary is the name of the key that encrypts writes.
func (d *Desired) Primary() string {
	if len(d.Keys) == 0 {
		return ""
	}
	return d.Keys[0].Name
}

// KeyNames are the names in provider order.
func (d *Desired) KeyNames() []string {
	out := make([]string, len(d.Keys))
	for i, k := range d.Keys {
		out[i] = k.Name
	}
	return out
}

// Action is what the rotator must see done before a phase may follow.
type Action int

const (
	// WaitLoaded: every master's apiserver has loaded the desired
	// configuration.
	WaitLoaded Action = iota
	// Rewrite: every encrypted object rewritten and verified under the
	// primary key (every master writes with it already).
	Rewrite
)

// Transition is one step of a rotation: the actions the current desired
// state needs before the next one may be recorded.
type Transition struct {
	Needs []Action
	Next  Desired
	// Done: Next ends the rotation.
	Done bool
}

// Start begins a rotation to the sealed key nk: it is added after the keys
// in use, so every master can read what it will encrypt before any master
// writes with it.
func Start(d Desired, nk SealedKey, now time.Time) (Desired, error) {
	if d.Rotation != nil {
		return d, fmt.Errorf("a rotation to %s is already under way (phase %s)", d.Rotation.To, d.Rotation.Phase)
	}
	for _, k := range d.Keys {
		if k.Name == nk.Name {
			return d, fmt.Errorf("key %s is already in the configuration", nk.Name)
		}
	}
	next := d
	next.Keys = append(append([]SealedKey(nil), d.Keys...), nk)
	next.Rotation = &Rotation{From: d.Primary(), To: nk.Name, Phase: PhaseAdding, Started: now.UTC()}
	return next, nil
}

// Advance says what the rotation recorded in d needs, and what to record
// once that is done. The order keeps two rules whatever master lags one
// step behind: no master writes with a key another master cannot read
// (the new key becomes primary only once every master decrypts with it),
// and no key leaves a configuration while an object may still be
// encrypted with it (old keys go only after the rewrite was verified).
func Advance(d Desired, now time.Time) (Transition, error) {
	r := d.Rotation
	if r == nil {
		return Transition{}, fmt.Errorf("no rotation is under way")
	}
	next := d
	nr := *r
	next.Rotation = &nr
	var newKey SealedKey
	found := false
	for _, k := range d.Keys {
		if k.Name == r.To {
			newKey, found = k, true
		}
	}
	if !found {
		return Transition{}, fmt.Errorf("the desired configuration lacks the rotation's new key %s; it was changed by hand: restore it from a snapshot", r.To)
	}
	switch r.Phase {
	case PhaseAdding:
		keys := []SealedKey{newKey}
		for _, k := range d.Keys {
			if k.Name != r.To {
				keys = append(keys, k)
			}
		}
		next.Keys, nr.Phase = keys, PhasePrimary
		return Transition{Needs: []Action{WaitLoaded}, Next: next}, nil
	case PhasePrimary:
		nr.Phase = PhaseRewritten
		return Transition{Needs: []Action{WaitLoaded, Rewrite}, Next: next}, nil
	case PhaseRewritten:
		next.Keys, nr.Phase = []SealedKey{newKey}, PhaseRemoving
		return Transition{Next: next}, nil
	case PhaseRemoving:
		next.Rotation, next.LastRotated = nil, now.UTC()
		return Transition{Needs: []Action{WaitLoaded}, Next: next, Done: true}, nil
	}
	return Transition{}, fmt.Errorf("unknown rotation phase %q in etcd; a newer k8s-master recorded it: rerun the command with that release", r.Phase)
}
