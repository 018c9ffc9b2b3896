package chaos

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// synthetic is two clients, one request each per 100ms (client 1 at
// 0, 100, ...; client 2 at 50, 150, ...), 40ms when it succeeds, 10ms when
// it fails, over 10s, with three faults of known effect:
//   - kill-holder at 1000: everything invoked in [1000, 2500) fails, and
//     client 1's request at 1000 hangs until 3000 (unknown). Last success
//     before: client 2's at 950, done 990; first after: client 2's at
//     2550, done 2590. Unavailable 1600ms.
//   - partition 5000-6000: no effect. 0.
//   - kill-holder at 8000: everything invoked in [8000, 8700) fails
//     (7990 to 8740), then client 1's request at 9000 fails alone (8990
//     to 9090). 750ms + 100ms = 850ms in two gaps.
func synthetic() ([]Op, []Fault) {
	var ops []Op
	for c := 1; c <= 2; c++ {
		for t := (c - 1) * 50; t < 10000; t += 100 {
			if c == 1 && t == 1000 {
				ops = append(ops, Op{Client: c, Kind: KindRead, Key: "k", Outcome: Unknown, Invoke: ms(t), Complete: ms(3000), Err: "timeout"})
				t = 2900
				continue
			}
			if (t >= 1000 && t < 2500) || (t >= 8000 && t < 8700) || (c == 1 && t == 9000) {
				ops = append(ops, Op{Client: c, Kind: KindRead, Key: "k", Outcome: Failed, Invoke: ms(t), Complete: ms(t + 10), Err: "refused"})
				continue
			}
			ops = append(ops, read(c, "k", t, t+40, "v"))
		}
	}
	faults := []Fault{
		{Kind: "kill-holder", Start: ms(8000), End: ms(8000)},
		{Kind: "kill-holder", Start: ms(1000), End: ms(1000)},
		{Kind: "partition", Start: ms(5000), End: ms(6000)},
	}
	return ops, faults
}

func TestUnavailability(t *testing.T) {
	ops, faults := synthetic()
	out := Unavailability(ops, faults)
	want := []struct {
		kind     string
		d        time.Duration
		from, to int
		gaps     int
	}{
		{"kill-holder", 1600 * time.Millisecond, 990, 2590, 1},
		{"partition", 0, 0, 0, 0},
		{"kill-holder", 850 * time.Millisecond, 7990, 9090, 2},
	}
	if len(out) != len(want) {
		t.Fatalf("%d outages", len(out))
	}
	for i, w := range want {
		o := out[i]
		if o.Fault.Kind != w.kind || o.Duration != w.d || o.Gaps != w.gaps || !o.Recovered {
			t.Errorf("fault %d: %+v, want %+v", i, o, w)
		}
		if w.gaps > 0 && (!o.From.Equal(ms(w.from)) || !o.To.Equal(ms(w.to))) {
			t.Errorf("fault %d: from %s to %s, want %d to %d", i, o.From.Sub(base), o.To.Sub(base), w.from, w.to)
		}
	}

	// A history that ends inside the outage.
	ops = []Op{read(1, "k", 0, 40, "v"), read(1, "k", 100, 140, "v")}
	for t := 200; t < 1000; t += 100 {
		ops = append(ops, Op{Client: 1, Kind: KindRead, Outcome: Failed, Invoke: ms(t), Complete: ms(t + 10)})
	}
	o := Unavailability(ops, []Fault{{Kind: "kill", Start: ms(150), End: ms(150)}})[0]
	if o.Recovered || o.Duration != 770*time.Millisecond || !o.From.Equal(ms(140)) {
		t.Fatalf("unrecovered: %+v", o)
	}
}

func TestReport(t *testing.T) {
	ops, faults := synthetic()
	var vip []VIPSample
	for t := 0; t <= 10000; t += 500 {
		s := VIPSample{At: ms(t), Holders: []string{"m1"}}
		switch t {
		case 1500:
			s.Holders = nil
		case 8500:
			s.Holders = []string{"m1", "m2"}
		}
		vip = append(vip, s)
	}
	lostOp := cas(2, "reg-0", 8100, 8150, "a", "b", OK, OutWritten)
	check := Check(concurrentOK("reg-0"), 0)
	r := NewReport(ReportInput{
		Title:        "synthetic",
		Ops:          ops,
		Faults:       faults,
		VIP:          vip,
		Check:        &check,
		Verification: &Verification{Registers: 1, Lost: []Lost{{Op: lostOp, Reason: "overwritten"}}},
	})
	if len(r.Kinds) != 2 {
		t.Fatalf("kinds %+v", r.Kinds)
	}
	k := r.Kinds[0]
	if k.Kind != "kill-holder" || k.Faults != 2 || k.WithOutage != 2 || k.Median != 1225*time.Millisecond || k.Max != 1600*time.Millisecond || k.Lost != 1 || k.DualHolder != 1 {
		t.Fatalf("kill-holder figures %+v", k)
	}
	md := r.Markdown()
	for _, s := range []string{
		"# synthetic",
		"| kill-holder | 2 | 2 | 1.225s | 1.600s | 1 | 1 |",
		"| partition | 1 | 0 | 0.000s | 0.000s | 0 | 0 |",
		"| 1 | kill-holder | +1.000s | +1.000s | 1.600s | +0.990s | +2.590s | 1 | yes | 0 | 0 |",
		"| 3 | kill-holder | +8.000s | +8.000s | 0.850s | +7.990s | +9.090s | 2 | yes | 1 | 1 |",
		"| linearizability | ok |",
		"| acknowledged ops lost | 1 of 0 acknowledged writes |",
		"| VIP samples with two or more holders | 1 of 21 |",
		"| reg-0 | 7 | 0 | ok |",
		"client 2 cas-update reg-0=\"b\"",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("markdown lacks %q", s)
		}
	}
	if t.Failed() {
		t.Log(md)
	}

	var buf bytes.Buffer
	if err := r.WritePNG(&buf); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	// Rows for clients 0 (no requests here), 1, 2 and the VIP.
	if b := img.Bounds(); b.Dx() != TimelineWidth || b.Dy() != tlTop+4*tlRow+tlBottom {
		t.Fatalf("size %v", b)
	}
	// The run spans 0 to 10s: client 1's hung request at 2s is orange, the
	// VIP at 8.7s magenta.
	px := func(at, row int) (uint32, uint32, uint32) {
		x := tlLeft + (TimelineWidth-tlLeft-tlRight)*at/10000
		r, g, b, _ := img.At(x, tlTop+row*tlRow+tlRow/2).RGBA()
		return r >> 8, g >> 8, b >> 8
	}
	if r, g, b := px(2000, 1); r != 240 || g != 150 || b != 0 {
		t.Errorf("client 1 at 2s: %d,%d,%d", r, g, b)
	}
	if r, g, b := px(8700, 3); r != 210 || g != 0 || b != 210 {
		t.Errorf("VIP at 8.7s: %d,%d,%d", r, g, b)
	}
	if dir := os.Getenv("CHAOS_REPORT_DIR"); dir != "" {
		if err := r.WritePNGFile(filepath.Join(dir, "timeline.png")); err != nil {
			t.Fatal(err)
		}
		if err := r.WriteMarkdown(filepath.Join(dir, "report.md")); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMedianMax(t *testing.T) {
	s := time.Second
	if m, x := medianMax([]time.Duration{3 * s, 1 * s, 2 * s}); m != 2*s || x != 3*s {
		t.Fatal(m, x)
	}
	if m, x := medianMax([]time.Duration{0, 4 * s}); m != 2*s || x != 4*s {
		t.Fatal(m, x)
	}
}
