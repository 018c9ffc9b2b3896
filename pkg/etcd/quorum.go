package etcd

import (
	"fmt"
	"strings"

	"github.com/k8s-master/k8s-master/pkg/config"
)

// Quorum is the number of voters that must agree: a majority.
func Quorum(voters int) int { return voters/2 + 1 }

// QuorumSummary describes the voters of a member list.
type QuorumSummary struct {
	Voters            int `json:"voters"`
	HealthyVoters     int `json:"healthyVoters"`
	Learners          int `json:"learners"`
	Quorum            int `json:"quorum"`
	FailuresTolerated int `json:"failuresTolerated"`
}

// Summarize counts voters and learners; FailuresTolerated is how many more
// voters may fail now before the cluster loses quorum.
func Summarize(ms []MemberStatus) QuorumSummary {
	var s QuorumSummary
	for _, m := range ms {
		if m.Learner {
			s.Learners++
			continue
		}
		s.Voters++
		if m.Healthy {
			s.HealthyVoters++
		}
	}
	s.Quorum = Quorum(s.Voters)
	s.FailuresTolerated = max(0, s.HealthyVoters-s.Quorum)
	return s
}

// Warnings are what an operator should know about the member list.
func Warnings(ms []MemberStatus) []string {
	s := Summarize(ms)
	var w []string
	if s.Voters%2 == 0 && s.Voters > 0 {
		w = append(w, fmt.Sprintf("%d voting members: an even count tolerates no more failures than %d; add or remove one master", s.Voters, s.Voters-1))
	}
	for _, m := range ms {
		if !m.Learner && !m.Healthy {
			w = append(w, fmt.Sprintf("member %s is unhealthy: %s", nameOr(m), m.Error))
		}
		if m.Learner {
			w = append(w, fmt.Sprintf("member %s is a learner (a join in progress, or one that failed: remove it with k8s-master member remove)", nameOr(m)))
		}
	}
	if s.HealthyVoters < s.Quorum {
		w = append(w, fmt.Sprintf("no quorum: %d of %d voters healthy, %d needed; the cluster cannot accept writes", s.HealthyVoters, s.Voters, s.Quorum))
	}
	return w
}

func nameOr(m MemberStatus) string {
	if m.Name != "" {
		return m.Name
	}
	return m.IDHex + " (" + strings.Join(m.PeerURLs, ",") + ", never started)"
}

// CheckAdd refuses a new member while any voter is unhealthy: the new
// member raises the quorum before it can vote, so a cluster that is already
// one failure from losing quorum would lose it (etcd's FAQ).
func CheckAdd(ms []MemberStatus) error {
	var bad []string
	for _, m := range ms {
		if !m.Learner && !m.Healthy {
			bad = append(bad, nameOr(m))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("voting member(s) %s unhealthy; adding a master now could cost the cluster its quorum. Bring them back or remove them (k8s-master member remove), or %w", strings.Join(bad, ", "), config.Hint("pass {force}"))
	}
	return nil
}

// CheckRemove refuses to remove member id when fewer healthy voters than
// the new quorum would remain.
func CheckRemove(ms []MemberStatus, id uint64) error {
	var target *MemberStatus
	for i := range ms {
		if ms[i].ID == id {
			target = &ms[i]
		}
	}
	if target == nil {
		return fmt.Errorf("member %x is not in the cluster", id)
	}
	if target.Learner {
		return nil
	}
	s := Summarize(ms)
	voters, healthy := s.Voters-1, s.HealthyVoters
	if target.Healthy {
		healthy--
	}
	if voters == 0 {
		return fmt.Errorf("%s is the only voting member; removing it would end the cluster (use k8s-master reset)", nameOr(*target))
	}
	if healthy < Quorum(voters) {
		return fmt.Errorf("removing %s leaves %d healthy of %d voters, fewer than the quorum of %d; bring the other masters back first, or %w", nameOr(*target), healthy, voters, Quorum(voters), config.Hint("pass {force}"))
	}
	return nil
}
