package etcd

import (
	"strings"
	"testing"
)

func members(spec string) []MemberStatus {
	// spec: one letter per member: H healthy voter, D dead voter, L learner.
	var ms []MemberStatus
	for i, c := range spec {
		m := MemberStatus{ID: uint64(i + 1), Name: string(rune('a' + i))}
		switch c {
		case 'H':
			m.Healthy = true
		case 'L':
			m.Learner, m.Healthy = true, true
		case 'D':
			m.Error = "dead"
		}
		ms = append(ms, m)
	}
	return ms
}

func TestQuorumTable(t *testing.T) {
	// Raft majorities: quorum is n/2+1, and n-quorum members may fail.
	for _, row := range []struct{ n, quorum, tolerated int }{{1, 1, 0}, {2, 2, 0}, {3, 2, 1}, {4, 3, 1}, {5, 3, 2}} {
		s := Summarize(members(strings.Repeat("H", row.n)))
		if s.Quorum != row.quorum || s.FailuresTolerated != row.tolerated {
			t.Errorf("%d masters: quorum %d tolerated %d, want %d %d", row.n, s.Quorum, s.FailuresTolerated, row.quorum, row.tolerated)
		}
	}
	if s := Summarize(members("HHD")); s.FailuresTolerated != 0 || s.HealthyVoters != 2 {
		t.Errorf("one of three down: %+v", s)
	}
	if s := Summarize(members("HHHL")); s.Voters != 3 || s.Learners != 1 || s.Quorum != 2 {
		t.Errorf("learners must not count as voters: %+v", s)
	}
}

func TestCheckAdd(t *testing.T) {
	if err := CheckAdd(members("HHH")); err != nil {
		t.Error(err)
	}
	if err := CheckAdd(members("HHL")); err != nil {
		t.Errorf("a healthy learner blocked the check: %v", err)
	}
	if err := CheckAdd(members("HDH")); err == nil || !strings.Contains(err.Error(), "b") || !strings.HasSuffix(err.Error(), ", or pass force") {
		t.Errorf("unhealthy voter: err = %v", err)
	}
}

func TestCheckRemove(t *testing.T) {
	cases := []struct {
		spec string
		id   uint64
		ok   bool
	}{
		{"HHH", 1, true},   // 3 -> 2, both healthy
		{"HHD", 3, true},   // remove the dead one: 2 healthy of 2
		{"HHD", 1, false},  // remove a healthy one: 1 healthy of 2
		{"HH", 1, true},    // 2 -> 1
		{"HD", 1, false},   // leaves only the dead one
		{"HD", 2, true},    // remove the dead one: 1 of 1
		{"H", 1, false},    // the last voter
		{"HHHHD", 1, true}, // 5 -> 4 with 3 healthy, quorum 3
		{"HHHDD", 1, false},
		{"HHL", 3, true}, // learners can always go
	}
	for _, tc := range cases {
		err := CheckRemove(members(tc.spec), tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("%s remove %d: err = %v, want ok=%v", tc.spec, tc.id, err, tc.ok)
		}
	}
	if err := CheckRemove(members("HHH"), 9); err == nil {
		t.Error("removing an unknown member passed")
	}
}

func TestWarnings(t *testing.T) {
	if w := Warnings(members("HHH")); len(w) != 0 {
		t.Errorf("healthy cluster warned: %v", w)
	}
	w := strings.Join(Warnings(members("HHHD")), "\n")
	for _, want := range []string{"even count", "member d is unhealthy"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q lack %q", w, want)
		}
	}
	if w := strings.Join(Warnings(members("HDD")), "\n"); !strings.Contains(w, "no quorum") {
		t.Errorf("no-quorum warning missing: %q", w)
	}
}
