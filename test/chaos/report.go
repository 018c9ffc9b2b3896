package chaos

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// Fault is one injected fault: its kind (e.g. "kill-holder", "partition")
// and when the injector started and ended it (End = Start for an
// instantaneous fault such as a SIGKILL).
type Fault struct {
	Kind  string    `json:"kind"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// VIPSample is one observation of which masters held the VIP.
type VIPSample struct {
	At      time.Time `json:"at"`
	Holders []string  `json:"holders"`
}

// Outage is the client-observed unavailability attributed to one fault.
//
// The fault's window runs from its Start to the next fault's Start (the end
// of the history for the last one). Each request that completed in the
// window without success (failed or unknown outcome) failed at some point
// p after both its invocation and the fault's start: p = max(invoke,
// Start) is the earliest. Its success-free gap runs from the last
// successful completion of any client at or before p (the run's first
// invocation if none) to the first successful completion after p (the
// run's last completion if none: not Recovered). Duration is the sum of
// the distinct gaps. For one outage that is "last success before the
// fault's effect to first success after it"; a request sent just before
// the fault that hangs until its timeout, or one sent during the outage
// that times out after recovery, falls in that same gap; a flapping
// recovery adds its later gaps without the successes between them. A
// fault whose window has no unsuccessful request had no outage: Duration
// 0, Gaps 0. A CAS conflict is a success: the server answered.
type Outage struct {
	Fault    Fault
	Duration time.Duration
	From, To time.Time // start of the first gap, end of the last; zero without outage
	// Until is the end of the fault's window, zero for the last fault.
	Until     time.Time
	Gaps      int
	Recovered bool
	// Lost counts acknowledged writes, completed in the window, that the
	// final state contradicts; DualHolder the VIP samples in the window
	// with two or more holders.
	Lost, DualHolder int
}

// faultWindows sorts faults by start and gives each its window's end (the
// next fault's start, or the zero time for "open").
func faultWindows(faults []Fault) ([]Fault, []time.Time) {
	fs := append([]Fault(nil), faults...)
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].Start.Before(fs[j].Start) })
	ends := make([]time.Time, len(fs))
	for i := range fs[:max(len(fs)-1, 0)] {
		ends[i] = fs[i+1].Start
	}
	return fs, ends
}

func inWindow(t, start, end time.Time) bool {
	return !t.Before(start) && (end.IsZero() || t.Before(end))
}

// Unavailability computes each fault's Outage (see Outage), in order of
// start.
func Unavailability(ops []Op, faults []Fault) []Outage {
	var succ []time.Time
	var first, last time.Time
	for i, op := range ops {
		if op.Outcome == OK {
			succ = append(succ, op.Complete)
		}
		if i == 0 || op.Invoke.Before(first) {
			first = op.Invoke
		}
		if op.Complete.After(last) {
			last = op.Complete
		}
	}
	sort.Slice(succ, func(i, j int) bool { return succ[i].Before(succ[j]) })

	fs, ends := faultWindows(faults)
	out := make([]Outage, len(fs))
	for fi, f := range fs {
		o := Outage{Fault: f, Until: ends[fi], Recovered: true}
		gaps := map[int]bool{} // by index of the success that ends the gap
		for _, op := range ops {
			if op.Outcome == OK || !inWindow(op.Complete, f.Start, ends[fi]) {
				continue
			}
			p := later(op.Invoke, f.Start)
			i := sort.Search(len(succ), func(i int) bool { return succ[i].After(p) })
			if gaps[i] {
				continue
			}
			gaps[i] = true
			from, to := first, last
			if i > 0 {
				from = succ[i-1]
			}
			if i < len(succ) {
				to = succ[i]
			} else {
				o.Recovered = false
			}
			o.Duration += to.Sub(from)
			if o.From.IsZero() || from.Before(o.From) {
				o.From = from
			}
			if to.After(o.To) {
				o.To = to
			}
		}
		o.Gaps = len(gaps)
		out[fi] = o
	}
	return out
}

// KindFigures sums up the outages of one fault kind. Median and Max are
// over all its faults, those without outage counting as 0.
type KindFigures struct {
	Kind               string
	Faults, WithOutage int
	Median, Max        time.Duration
	Lost, DualHolder   int
}

// ReportInput is what a run produced.
type ReportInput struct {
	Title        string
	Ops          []Op
	Faults       []Fault
	VIP          []VIPSample
	Check        *CheckResult  // nil: not checked
	Verification *Verification // nil: not verified
}

// Report holds a run's figures.
type Report struct {
	ReportInput
	Start, End             time.Time
	Clients                int // highest client id + 1
	Counts                 map[Outcome]int
	Acknowledged           int
	Outages                []Outage
	Kinds                  []KindFigures
	DualHolder, VIPSamples int
}

// NewReport computes the figures of a run.
func NewReport(in ReportInput) *Report {
	r := &Report{ReportInput: in, Counts: map[Outcome]int{}}
	r.Ops = append([]Op(nil), in.Ops...)
	SortOps(r.Ops)
	r.VIP = append([]VIPSample(nil), in.VIP...)
	sort.SliceStable(r.VIP, func(i, j int) bool { return r.VIP[i].At.Before(r.VIP[j].At) })
	for i, op := range r.Ops {
		r.Counts[op.Outcome]++
		if op.Acknowledged() {
			r.Acknowledged++
		}
		r.Clients = max(r.Clients, op.Client+1)
		if i == 0 || op.Invoke.Before(r.Start) {
			r.Start = op.Invoke
		}
		if op.Complete.After(r.End) {
			r.End = op.Complete
		}
	}
	r.VIPSamples = len(in.VIP)
	for _, s := range in.VIP {
		if len(s.Holders) >= 2 {
			r.DualHolder++
		}
	}

	r.Outages = Unavailability(r.Ops, in.Faults)
	for i := range r.Outages {
		o := &r.Outages[i]
		if in.Verification != nil {
			for _, l := range in.Verification.Lost {
				if inWindow(l.Op.Complete, o.Fault.Start, o.Until) {
					o.Lost++
				}
			}
		}
		for _, s := range in.VIP {
			if len(s.Holders) >= 2 && inWindow(s.At, o.Fault.Start, o.Until) {
				o.DualHolder++
			}
		}
	}

	byKind := map[string]int{}
	durations := map[string][]time.Duration{}
	for _, o := range r.Outages {
		i, ok := byKind[o.Fault.Kind]
		if !ok {
			i = len(r.Kinds)
			byKind[o.Fault.Kind] = i
			r.Kinds = append(r.Kinds, KindFigures{Kind: o.Fault.Kind})
		}
		k := &r.Kinds[i]
		k.Faults++
		if o.Gaps > 0 {
			k.WithOutage++
		}
		k.Lost += o.Lost
		k.DualHolder += o.DualHolder
		durations[o.Fault.Kind] = append(durations[o.Fault.Kind], o.Duration)
	}
	for i := range r.Kinds {
		r.Kinds[i].Median, r.Kinds[i].Max = medianMax(durations[r.Kinds[i].Kind])
	}
	return r
}

// medianMax of a non-empty list; the median of an even count is the mean
// of the middle two.
func medianMax(ds []time.Duration) (time.Duration, time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := len(s)
	if n%2 == 1 {
		return s[n/2], s[n-1]
	}
	return (s[n/2-1] + s[n/2]) / 2, s[n-1]
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.3fs", d.Seconds())
}

// rel formats t as seconds since the run's start.
func (r *Report) rel(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%+.3fs", t.Sub(r.Start).Seconds())
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// Markdown renders the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	title := r.Title
	if title == "" {
		title = "Chaos run"
	}
	fmt.Fprintf(&b, "# %s\n\n", title)
	fmt.Fprintf(&b, "%s to %s (%s); %d clients (client 0 sets up and reads the final state); %d requests: %d ok, %d failed, %d unknown outcome.\n\n",
		r.Start.UTC().Format(time.RFC3339), r.End.UTC().Format(time.RFC3339), fmtDur(r.End.Sub(r.Start)),
		r.Clients, len(r.Ops), r.Counts[OK], r.Counts[Failed], r.Counts[Unknown])

	b.WriteString("## Summary\n\n| figure | value |\n| --- | --- |\n")
	lost := "not verified"
	if r.Verification != nil {
		lost = fmt.Sprintf("%d of %d acknowledged writes", len(r.Verification.Lost), r.Acknowledged)
	}
	verdict := "not checked"
	if r.Check != nil {
		verdict = string(r.Check.Verdict)
	}
	fmt.Fprintf(&b, "| acknowledged ops lost | %s |\n", lost)
	fmt.Fprintf(&b, "| linearizability | %s |\n", verdict)
	fmt.Fprintf(&b, "| VIP samples with two or more holders | %d of %d |\n", r.DualHolder, r.VIPSamples)
	fmt.Fprintf(&b, "| faults | %d |\n\n", len(r.Outages))

	if len(r.Kinds) > 0 {
		b.WriteString("## By fault kind\n\n")
		b.WriteString("Unavailability is the time no client request succeeded around the fault: from the last success before a failed request to the first success after it, summed over such gaps in the fault's window (up to the next fault); a fault with no failed request counts 0.\n\n")
		b.WriteString("| kind | faults | with outage | unavailability median | unavailability max | acknowledged ops lost | samples with two VIP holders |\n")
		b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, k := range r.Kinds {
			fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %d | %d |\n",
				k.Kind, k.Faults, k.WithOutage, fmtDur(k.Median), fmtDur(k.Max), k.Lost, k.DualHolder)
		}
		b.WriteString("\n## Faults\n\n")
		b.WriteString("| # | kind | start | end | unavailable | from | to | gaps | recovered | lost | two VIP holders |\n")
		b.WriteString("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n")
		for i, o := range r.Outages {
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %d | %s | %d | %d |\n",
				i+1, o.Fault.Kind, r.rel(o.Fault.Start), r.rel(o.Fault.End), fmtDur(o.Duration),
				r.rel(o.From), r.rel(o.To), o.Gaps, yesNo(o.Recovered), o.Lost, o.DualHolder)
		}
		b.WriteString("\nTimes are relative to the first request.\n\n")
	}

	if r.Check != nil {
		b.WriteString("## Linearizability by key\n\n| key | ops checked | unknown-outcome writes | verdict |\n| --- | ---: | ---: | --- |\n")
		for _, k := range r.Check.Keys {
			fmt.Fprintf(&b, "| %s | %d | %d | %s |\n", k.Key, k.Ops, k.Unknown, k.Verdict)
		}
		b.WriteString("\n")
	}

	if r.Verification != nil {
		fmt.Fprintf(&b, "## Acknowledged writes\n\n%d registers and %d acknowledged creates of fresh names verified against the final state; %d lost.\n\n",
			r.Verification.Registers, r.Verification.Creates, len(r.Verification.Lost))
		for _, e := range r.Verification.Examples(10) {
			fmt.Fprintf(&b, "- %s\n", e)
		}
		if len(r.Verification.Lost) > 10 {
			fmt.Fprintf(&b, "- and %d more\n", len(r.Verification.Lost)-10)
		}
	}
	return b.String()
}

// WriteMarkdown writes Markdown to path.
func (r *Report) WriteMarkdown(path string) error {
	return os.WriteFile(path, []byte(r.Markdown()), 0o644)
}
