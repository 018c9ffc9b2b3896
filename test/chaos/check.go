package chaos

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Verdict is the outcome of a linearizability check.
type Verdict string

const (
	VerdictOK      Verdict = "ok"
	VerdictIllegal Verdict = "illegal"
	VerdictUnknown Verdict = "unknown" // the checker ran out of time
)

// KeyCheck is the verdict for one register.
type KeyCheck struct {
	Key     string
	Ops     int // ops given to the checker
	Unknown int // of which writes with an unknown outcome
	Verdict Verdict
}

// CheckResult is the verdict per register and overall (illegal if any key
// is, else unknown if any key is, else ok).
type CheckResult struct {
	Verdict Verdict
	Keys    []KeyCheck
	ops     map[string][]porcupine.Operation
	timeout time.Duration
}

// Illegal lists the keys whose history is not linearizable.
func (r CheckResult) Illegal() []string {
	var keys []string
	for _, k := range r.Keys {
		if k.Verdict == VerdictIllegal {
			keys = append(keys, k.Key)
		}
	}
	return keys
}

// regInput is a request to the register model. Values are unique per key,
// so a CAS conditioned on the resourceVersion it read is equivalent to a
// CAS on the value it read (From): the value changes exactly when the
// resourceVersion does, and never comes back.
type regInput struct {
	Kind Kind
	From string // CAS: the value read before
	To   string // CAS, create: the value written
}

// Unknown outcomes. A write whose outcome the client never learnt gets
// output outUnknown and returns after the end of its key's history, which
// is marked by an extra operation (kindEnd) after every other op's return.
// Before the end such a write may only take effect, where its precondition
// holds; after the end it may be linearized as a no-op. That is every
// behaviour porcupine's usual "accept either way" allows: a write that
// returns at infinity and has no effect can always be moved to the end.
// It also keeps an illegal history decidable: accepting no-ops anywhere
// lets every subset of the pending unknown writes be linearized at every
// point, which made the search exponential in their number.
const (
	outUnknown = "?"
	kindEnd    = Kind("end")
)

// regState is a register's value ("" while the ConfigMap does not exist)
// and whether the end of its history has been linearized.
type regState struct {
	Value string
	Ended bool
}

// registerModel is a compare-and-swap register per key.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Metadata.(opMeta).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return regState{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		s, in, out := state.(regState), input.(regInput), output.(string)
		// The precondition of a write: CAS on the value, create on absence.
		pre := s.Value == in.From
		if in.Kind == KindCreate {
			pre = s.Value == ""
		}
		applied := regState{Value: in.To, Ended: s.Ended}
		switch {
		case in.Kind == kindEnd:
			return true, regState{Value: s.Value, Ended: true}
		case in.Kind == KindRead:
			return out == s.Value, s
		case out == OutWritten:
			return pre, applied
		case out == OutConflict && in.Kind == KindCAS, out == OutExists && in.Kind == KindCreate:
			return !pre, s
		case out == outUnknown && s.Ended:
			return true, s
		case out == outUnknown:
			return pre, applied
		}
		return false, s
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(regInput), output.(string)
		switch in.Kind {
		case KindRead:
			return fmt.Sprintf("read -> %q", out)
		case KindCAS:
			return fmt.Sprintf("cas(%q -> %q) -> %s", in.From, in.To, out)
		case kindEnd:
			return "end of history"
		default:
			return fmt.Sprintf("create(%q) -> %s", in.To, out)
		}
	},
	DescribeState: func(state interface{}) string {
		s := state.(regState)
		v := fmt.Sprintf("%q", s.Value)
		if s.Value == "" {
			v = "<absent>"
		}
		if s.Ended {
			v += " (ended)"
		}
		return v
	},
	DescribeOperationMetadata: func(info interface{}) string {
		m := info.(opMeta)
		return m.detail
	},
}

type opMeta struct {
	key    string
	detail string
}

// operations turns ops into porcupine operations per register key: keys
// that are read or CAS-updated, with all their ops and, last, the end
// marker. Failed ops and reads without an answer had no effect and
// observed nothing, so they are left out; unknown writes return after the
// end marker. Creates of fresh names alone are trivially linearizable and
// are left to VerifyAcknowledged. Times are nanoseconds from the first
// invocation.
func operations(ops []Op) map[string][]porcupine.Operation {
	registers := map[string]bool{}
	var t0, tEnd time.Time
	for i, op := range ops {
		if op.Kind != KindCreate {
			registers[op.Key] = true
		}
		if i == 0 || op.Invoke.Before(t0) {
			t0 = op.Invoke
		}
		if op.Complete.After(tEnd) {
			tEnd = op.Complete
		}
	}
	end := tEnd.Sub(t0).Nanoseconds() + 1
	out := map[string][]porcupine.Operation{}
	for _, op := range ops {
		if !registers[op.Key] || op.Outcome == Failed || (op.Kind == KindRead && op.Outcome != OK) {
			continue
		}
		in := regInput{Kind: op.Kind, From: op.Expected, To: op.Input}
		call := op.Invoke.Sub(t0).Nanoseconds()
		ret, output := op.Complete.Sub(t0).Nanoseconds(), op.Output
		if op.Outcome == Unknown {
			ret, output = end+2, outUnknown
		}
		ret = max(ret, call)
		detail := fmt.Sprintf("client %d %s %s", op.Client, op.Outcome, op.Invoke.Format("15:04:05.000"))
		if op.Err != "" {
			detail += ": " + op.Err
		}
		out[op.Key] = append(out[op.Key], porcupine.Operation{
			ClientId: op.Client,
			Input:    in,
			Call:     call,
			Output:   output,
			Return:   ret,
			Metadata: opMeta{key: op.Key, detail: detail},
		})
	}
	for key := range out {
		out[key] = append(out[key], porcupine.Operation{
			Input:    regInput{Kind: kindEnd},
			Call:     end,
			Output:   "",
			Return:   end + 1,
			Metadata: opMeta{key: key, detail: "end of history"},
		})
	}
	return out
}

// Check checks each register's history for linearizability, the keys in
// parallel, each given at most timeout (0: no limit).
func Check(ops []Op, timeout time.Duration) CheckResult {
	r := CheckResult{Verdict: VerdictOK, ops: operations(ops), timeout: timeout}
	for key, kops := range r.ops {
		kc := KeyCheck{Key: key, Ops: len(kops) - 1} // less the end marker
		for _, op := range kops {
			if op.Output == outUnknown {
				kc.Unknown++
			}
		}
		r.Keys = append(r.Keys, kc)
	}
	sort.Slice(r.Keys, func(i, j int) bool { return r.Keys[i].Key < r.Keys[j].Key })
	var wg sync.WaitGroup
	for i := range r.Keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := porcupine.CheckOperationsTimeout(registerModel, r.ops[r.Keys[i].Key], timeout)
			r.Keys[i].Verdict = verdictOf(res)
		}()
	}
	wg.Wait()
	for _, k := range r.Keys {
		switch {
		case k.Verdict == VerdictIllegal:
			r.Verdict = VerdictIllegal
		case k.Verdict == VerdictUnknown && r.Verdict == VerdictOK:
			r.Verdict = VerdictUnknown
		}
	}
	return r
}

func verdictOf(res porcupine.CheckResult) Verdict {
	switch res {
	case porcupine.Ok:
		return VerdictOK
	case porcupine.Illegal:
		return VerdictIllegal
	default:
		return VerdictUnknown
	}
}

// WriteVisualization writes porcupine's HTML view of the illegal keys'
// histories (with their longest linearizable prefixes), or of every key
// when none is illegal.
func (r CheckResult) WriteVisualization(path string) error {
	keys := r.Illegal()
	if len(keys) == 0 {
		for _, k := range r.Keys {
			keys = append(keys, k.Key)
		}
	}
	var ops []porcupine.Operation
	for _, k := range keys {
		ops = append(ops, r.ops[k]...)
	}
	_, info := porcupine.CheckOperationsVerbose(registerModel, ops, r.timeout)
	return porcupine.VisualizePath(registerModel, info, path)
}
