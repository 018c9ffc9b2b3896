// Package chaos is the client side of the reliability lab: a workload that
// drives ConfigMaps through the VIP while faults are injected, the recorded
// history of its requests, a linearizability check of that history and a
// report (markdown and a PNG timeline) of what the clients observed.
package chaos

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"
)

// Kind is what a request did.
type Kind string

const (
	// KindRead is a Get of one ConfigMap; Output is data["v"].
	KindRead Kind = "read"
	// KindCAS is an Update carrying the resourceVersion of an earlier read
	// (Expected/ExpectedVersion) that sets data["v"] to Input.
	KindCAS Kind = "cas-update"
	// KindCreate is a Create of a ConfigMap with data["v"] = Input.
	KindCreate Kind = "create"
)

// Outcome is what the client knows about a request's effect.
type Outcome string

const (
	// OK: the server answered and the answer is in Output (a CAS that lost
	// the race is OK with Output "conflict": it failed cleanly).
	OK Outcome = "ok"
	// Failed: the request certainly had no effect (never sent, or refused
	// by the server before it could act).
	Failed Outcome = "failed"
	// Unknown: the request may or may not have taken effect (timeout or
	// connection loss after it was sent, or a server error).
	Unknown Outcome = "unknown"
)

// Outputs of writes.
const (
	OutWritten  = "ok"       // the CAS or create took effect
	OutConflict = "conflict" // CAS precondition failed: the value had moved on
	OutExists   = "exists"   // create of a name that already existed
)

// Op is one request of one client.
type Op struct {
	Client int    `json:"client"` // 0 is the control client (setup, final reads); workers are 1..N
	Kind   Kind   `json:"kind"`
	Key    string `json:"key"` // ConfigMap name
	// Input is the value a CAS or create writes.
	Input string `json:"input,omitempty"`
	// Expected and ExpectedVersion are the value and resourceVersion a CAS
	// read before and made its precondition.
	Expected        string `json:"expected,omitempty"`
	ExpectedVersion string `json:"expectedVersion,omitempty"`
	// Output is the value read ("" for a ConfigMap that does not exist) or
	// one of OutWritten, OutConflict, OutExists; empty unless Outcome is OK.
	Output string `json:"output,omitempty"`
	// Version is the resourceVersion the server returned, when it did.
	Version  string    `json:"version,omitempty"`
	Outcome  Outcome   `json:"outcome"`
	Invoke   time.Time `json:"invoke"`
	Complete time.Time `json:"complete"` // for Unknown: when the client gave up
	Err      string    `json:"err,omitempty"`
}

// Acknowledged says whether the server confirmed that the op wrote.
func (o Op) Acknowledged() bool {
	return o.Outcome == OK && o.Output == OutWritten && (o.Kind == KindCAS || o.Kind == KindCreate)
}

// MayHaveWritten says whether the op's value may be in the store.
func (o Op) MayHaveWritten() bool {
	return o.Acknowledged() || (o.Outcome == Unknown && (o.Kind == KindCAS || o.Kind == KindCreate))
}

// History records ops from concurrent clients. With a sink, every op is
// also written as a JSON line as soon as it completes, so that a run cut
// short still leaves its history on disk.
type History struct {
	mu   sync.Mutex
	ops  []Op
	sink *json.Encoder
	err  error
}

// NewHistory returns an empty history; sink may be nil.
func NewHistory(sink io.Writer) *History {
	h := &History{}
	if sink != nil {
		h.sink = json.NewEncoder(sink)
	}
	return h
}

// Add records a completed op.
func (h *History) Add(op Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
	if h.sink != nil && h.err == nil {
		h.err = h.sink.Encode(op)
	}
}

// Ops returns a copy of the ops, in invoke order.
func (h *History) Ops() []Op {
	h.mu.Lock()
	ops := append([]Op(nil), h.ops...)
	h.mu.Unlock()
	SortOps(ops)
	return ops
}

// Len is the number of ops recorded.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Err is the first error writing to the sink.
func (h *History) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// SortOps orders ops by invoke time (then client), the order every
// consumer here expects.
func SortOps(ops []Op) {
	sort.SliceStable(ops, func(i, j int) bool {
		if !ops[i].Invoke.Equal(ops[j].Invoke) {
			return ops[i].Invoke.Before(ops[j].Invoke)
		}
		return ops[i].Client < ops[j].Client
	})
}

// WriteOps writes ops as JSON lines.
func WriteOps(w io.Writer, ops []Op) error {
	enc := json.NewEncoder(w)
	for _, op := range ops {
		if err := enc.Encode(op); err != nil {
			return err
		}
	}
	return nil
}

// ReadOps reads JSON lines written by WriteOps or a History sink.
func ReadOps(r io.Reader) ([]Op, error) {
	dec := json.NewDecoder(r)
	var ops []Op
	for {
		var op Op
		err := dec.Decode(&op)
		if errors.Is(err, io.EOF) {
			return ops, nil
		}
		if err != nil {
			return ops, fmt.Errorf("op %d: %w", len(ops)+1, err)
		}
		ops = append(ops, op)
	}
}

// SaveOps writes ops to a JSON lines file.
func SaveOps(path string, ops []Op) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := WriteOps(f, ops); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadOps reads a JSON lines file, in invoke order.
func LoadOps(path string) ([]Op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ops, err := ReadOps(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	SortOps(ops)
	return ops, nil
}
