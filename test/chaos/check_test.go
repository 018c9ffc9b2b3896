package chaos

import (
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func ms(n int) time.Time { return base.Add(time.Duration(n) * time.Millisecond) }

func read(c int, key string, from, to int, out string) Op {
	return Op{Client: c, Kind: KindRead, Key: key, Output: out, Outcome: OK, Invoke: ms(from), Complete: ms(to)}
}

func cas(c int, key string, from, to int, expected, value string, outcome Outcome, out string) Op {
	return Op{Client: c, Kind: KindCAS, Key: key, Expected: expected, Input: value, Output: out, Outcome: outcome, Invoke: ms(from), Complete: ms(to)}
}

func create(c int, key string, from, to int, value string, outcome Outcome, out string) Op {
	return Op{Client: c, Kind: KindCreate, Key: key, Input: value, Output: out, Outcome: outcome, Invoke: ms(from), Complete: ms(to)}
}

// concurrentOK is linearizable only through its overlaps: c3's read of
// "init" must go before c1's CAS, c2's read of "a" after it, and c2's
// conflict after it too.
func concurrentOK(key string) []Op {
	return []Op{
		create(0, key, 0, 1, "init", OK, OutWritten),
		cas(1, key, 2, 8, "init", "a", OK, OutWritten),
		read(2, key, 3, 5, "a"),
		read(3, key, 4, 9, "init"),
		cas(2, key, 10, 12, "init", "b", OK, OutConflict),
		cas(3, key, 11, 14, "a", "b", OK, OutWritten),
		read(1, key, 15, 16, "b"),
	}
}

func TestCheckAcceptsConcurrentLinearizable(t *testing.T) {
	r := Check(concurrentOK("k"), 0)
	if r.Verdict != VerdictOK || len(r.Keys) != 1 || r.Keys[0].Verdict != VerdictOK || r.Keys[0].Ops != 7 {
		t.Fatalf("got %+v", r)
	}
}

func TestCheckRejectsStaleRead(t *testing.T) {
	ops := append(concurrentOK("good"),
		create(0, "bad", 0, 1, "init", OK, OutWritten),
		cas(1, "bad", 20, 21, "init", "x", OK, OutWritten),
		read(2, "bad", 22, 23, "init"), // after the acknowledged write completed
	)
	r := Check(ops, 10*time.Second)
	if r.Verdict != VerdictIllegal {
		t.Fatalf("verdict %s, want illegal", r.Verdict)
	}
	if got := r.Illegal(); len(got) != 1 || got[0] != "bad" {
		t.Fatalf("illegal keys %v", got)
	}
	for _, k := range r.Keys {
		if k.Key == "good" && k.Verdict != VerdictOK {
			t.Fatalf("good key: %s", k.Verdict)
		}
	}
	path := filepath.Join(t.TempDir(), "viz.html")
	if err := r.WriteVisualization(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "<html") || !strings.Contains(string(b), `\"x\"`) {
		t.Fatalf("visualization lacks the history (%d bytes)", len(b))
	}
}

func TestCheckRejectsWrongConflict(t *testing.T) {
	// A conflict while the value is still the one read cannot happen.
	ops := []Op{
		create(0, "k", 0, 1, "init", OK, OutWritten),
		cas(1, "k", 2, 3, "init", "a", OK, OutConflict),
	}
	if r := Check(ops, 0); r.Verdict != VerdictIllegal {
		t.Fatalf("verdict %s", r.Verdict)
	}
}

func TestCheckUnknownOutcome(t *testing.T) {
	setup := create(0, "k", 0, 1, "init", OK, OutWritten)
	unknownCAS := cas(1, "k", 2, 3, "init", "a", Unknown, "")
	cases := []struct {
		name string
		ops  []Op
		want Verdict
	}{
		{"took effect", []Op{setup, unknownCAS, read(2, "k", 10, 11, "a"), read(2, "k", 12, 13, "a")}, VerdictOK},
		{"never took effect", []Op{setup, unknownCAS, read(2, "k", 10, 11, "init"), read(2, "k", 12, 13, "init")}, VerdictOK},
		{"took effect late", []Op{setup, unknownCAS, read(2, "k", 10, 11, "init"), read(2, "k", 12, 13, "a")}, VerdictOK},
		{"effect undone", []Op{setup, unknownCAS, read(2, "k", 10, 11, "a"), read(2, "k", 12, 13, "init")}, VerdictIllegal},
		{"only where its precondition held", []Op{setup, cas(2, "k", 4, 5, "init", "b", OK, OutWritten), unknownCAS, read(2, "k", 10, 11, "a")}, VerdictIllegal},
		// Counting the same request as failed would make its value a phantom.
		{"not failed", []Op{setup, cas(1, "k", 2, 3, "init", "a", Failed, ""), read(2, "k", 10, 11, "a")}, VerdictIllegal},
		// A read with no answer observed nothing.
		{"unknown read", []Op{setup, {Client: 2, Kind: KindRead, Key: "k", Output: "zzz", Outcome: Unknown, Invoke: ms(5), Complete: ms(6)}}, VerdictOK},
		{"unknown create", []Op{create(0, "k", 0, 1, "init", Unknown, ""), read(1, "k", 2, 3, ""), read(1, "k", 4, 5, "init")}, VerdictOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Check(c.ops, 10*time.Second)
			if r.Verdict != c.want {
				t.Fatalf("verdict %s, want %s", r.Verdict, c.want)
			}
		})
	}
}

// simulate runs clients against one atomic register in simulated time
// (ms): each request takes effect at a point inside its interval, some
// answers are lost (unknown outcome) and some of those requests never took
// effect at all. Its histories are linearizable by construction.
func simulate(seed uint64, clients, opsPerClient int) []Op {
	rng := mrand.New(mrand.NewPCG(seed, 1))
	type pending struct {
		at     int
		client int
		apply  func()
	}
	value := "init"
	ops := []Op{create(0, "k", 0, 1, "init", OK, OutWritten)}
	var queue []pending
	next := make([]int, clients+1) // when each client may start its next request
	lastRead := make([]string, clients+1)
	for c := 1; c <= clients; c++ {
		next[c] = 2 + rng.IntN(3)
	}
	for n := 0; n < clients*opsPerClient; n++ {
		// Start a request on the client that is free first.
		c := 1
		for i := 2; i <= clients; i++ {
			if next[i] < next[c] {
				c = i
			}
		}
		start := next[c]
		// Requests that took effect before this start do so in order.
		sort.SliceStable(queue, func(i, j int) bool { return queue[i].at < queue[j].at })
		for len(queue) > 0 && queue[0].at < start {
			queue[0].apply()
			queue = queue[1:]
		}
		point := start + 1 + rng.IntN(5)
		end := point + 1 + rng.IntN(5)
		i := len(ops)
		op := Op{Client: c, Key: "k", Outcome: OK, Invoke: ms(start), Complete: ms(end)}
		lost := rng.IntN(5) == 0 // the answer never comes back
		applies := !lost || rng.IntN(2) == 0
		if lastRead[c] == "" || rng.IntN(2) == 0 {
			op.Kind = KindRead
			lost = false
			applies = true
			queue = append(queue, pending{point, c, func() { ops[i].Output = value; lastRead[ops[i].Client] = value }})
		} else {
			op.Kind, op.Expected, op.Input = KindCAS, lastRead[c], fmt.Sprintf("c%d-%d", c, n)
			lastRead[c] = ""
			queue = append(queue, pending{point, c, func() {
				if !applies {
					return
				}
				if value == ops[i].Expected {
					value, ops[i].Output = ops[i].Input, OutWritten
				} else {
					ops[i].Output = OutConflict
				}
			}})
		}
		if lost {
			end += rng.IntN(20) // the client gives up later
			op.Outcome, op.Complete = Unknown, ms(end)
		}
		ops = append(ops, op)
		next[c] = end
	}
	sort.SliceStable(queue, func(i, j int) bool { return queue[i].at < queue[j].at })
	for _, p := range queue {
		p.apply()
	}
	for i := range ops {
		if ops[i].Outcome == Unknown {
			ops[i].Output = ""
		}
	}
	return ops
}

func TestCheckSimulatedHistories(t *testing.T) {
	needUnknown := 0
	for seed := uint64(0); seed < 30; seed++ {
		ops := simulate(seed, 4, 60)
		unknown := 0
		asFailed := append([]Op(nil), ops...)
		for i, op := range ops {
			if op.Outcome == Unknown {
				unknown++
				asFailed[i].Outcome = Failed
			}
		}
		if r := Check(ops, 20*time.Second); r.Verdict != VerdictOK {
			t.Fatalf("seed %d (%d ops, %d unknown): %s", seed, len(ops), unknown, r.Verdict)
		}
		if Check(asFailed, 20*time.Second).Verdict == VerdictIllegal {
			needUnknown++
		}
		// A read of a value nobody wrote cannot be explained, however many
		// writes are in doubt.
		for i := len(ops) - 1; i >= 0; i-- {
			if ops[i].Kind == KindRead && ops[i].Outcome == OK {
				ops[i].Output = "phantom"
				break
			}
		}
		if r := Check(ops, 20*time.Second); r.Verdict != VerdictIllegal {
			t.Fatalf("seed %d with a phantom read: %s", seed, r.Verdict)
		}
	}
	// The histories do depend on writes in doubt having taken effect.
	if needUnknown == 0 {
		t.Fatal("no history needed its unknown writes")
	}
}
