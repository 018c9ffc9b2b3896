package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/k8s-master/k8s-master/pkg/component"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/upgrade"
	"github.com/k8s-master/k8s-master/pkg/version"
)

// upgradeCheckStep runs before this master's etcd member starts: a start
// with other versions than the data directory last ran is an upgrade (or
// a downgrade), checked against the other masters (pkg/upgrade). A
// refusal changes nothing.
func (m *Master) upgradeCheckStep(c *config.Config) component.Step {
	return component.Step{Do: func(ctx context.Context, r *component.Runner) error {
		in := upgrade.Input{Name: c.Name, Self: version.Local(), Force: m.forceUpgrade}
		prev, err := readVersions(c)
		if err != nil {
			return err
		}
		in.Previous = &prev
		if !in.Changing() {
			return nil
		}
		r.Printf("upgrade: %s ran %s and now starts %s", c.Name, prev, in.Self)
		in.Peers, err = upgradePeers(ctx, c)
		if err != nil {
			return err
		}
		var seen []string
		for _, p := range in.Peers {
			state := "down"
			if p.Reachable {
				state = "up"
			}
			if p.Versions.Kubernetes != "" {
				state += ", " + p.Versions.String()
			}
			seen = append(seen, fmt.Sprintf("%s (%s)", p.Name, state))
		}
		if len(seen) > 0 {
			r.Printf("  other masters: %s", strings.Join(seen, "; "))
		}
		notes, err := upgrade.Check(in)
		for _, n := range notes {
			r.Printf("  %s", n)
		}
		return err
	}}
}

// readVersions reads what the data directory last ran. A directory
// without the record was run by a release that kept none (version.Legacy).
func readVersions(c *config.Config) (version.Versions, error) {
	data, err := os.ReadFile(c.Layout().Versions())
	if errors.Is(err, os.ErrNotExist) {
		return version.Legacy, nil
	}
	if err != nil {
		return version.Versions{}, fmt.Errorf("read what this master last ran: %w", err)
	}
	var v version.Versions
	if err := json.Unmarshal(data, &v); err != nil {
		return version.Versions{}, fmt.Errorf("%s: %w; delete it if it was damaged (the upgrade checks then assume %s)", c.Layout().Versions(), err, version.Legacy)
	}
	return v, nil
}

// recordVersions keeps what this master runs now, once its etcd member
// has run on the data directory.
func recordVersions(c *config.Config) error {
	data, _ := json.MarshalIndent(version.Local(), "", "  ")
	return fsutil.WriteFileAtomic(c.Layout().Versions(), append(data, '\n'), 0o600)
}

// upgradePeers asks the other members, which run while this one is down,
// whether they answer, and reads the versions every master registered
// (serializable: needs no quorum). Members come from this member's own
// copy of the membership.
func upgradePeers(ctx context.Context, c *config.Config) ([]upgrade.Peer, error) {
	members, err := etcd.StoredMembers(c)
	if err != nil {
		return nil, err
	}
	others := otherMembers(members, c.Name)
	var peers []upgrade.Peer
	var urls []string
	for _, mi := range others {
		peers = append(peers, upgrade.Peer{Name: mi.Name, Voter: !mi.IsLearner, Problem: "never started"})
		urls = append(urls, mi.ClientURLs...)
	}
	if len(urls) == 0 {
		return peers, nil
	}
	cli, err := etcd.NewClient(c, urls...)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	var reachable []string
	for i, mi := range others {
		if len(mi.ClientURLs) == 0 {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Status(sctx, mi.ClientURLs[0])
		cancel()
		if err != nil {
			peers[i].Problem = fmt.Sprintf("its etcd member at %s does not answer", mi.ClientURLs[0])
			continue
		}
		peers[i].Reachable = true
		reachable = append(reachable, mi.ClientURLs[0])
	}
	if len(reachable) == 0 {
		return peers, nil
	}
	cli.SetEndpoints(reachable...)
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	registered, err := join.NewStore(cli, nil).MastersAsSeen(gctx)
	if err != nil {
		return nil, fmt.Errorf("read the other masters' versions: %w", err)
	}
	for i := range peers {
		for _, info := range registered {
			if info.Name != peers[i].Name {
				continue
			}
			peers[i].Versions = version.Legacy
			if info.Versions != nil {
				peers[i].Versions = *info.Versions
			}
		}
	}
	return peers, nil
}

func otherMembers(ms []etcd.MemberInfo, self string) []etcd.MemberInfo {
	var out []etcd.MemberInfo
	for _, mi := range ms {
		if mi.Name != self {
			out = append(out, mi)
		}
	}
	return out
}

// handOverEtcdLeadership moves etcd leadership to another healthy voter
// when this member leads, so that no write waits for an election while
// this master stops (etcd would also try at its own close, but only after
// the apiserver has drained).
func (m *Master) handOverEtcdLeadership(ctx context.Context, cli *clientv3.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, m.cfg.LocalEtcdURL())
	if err != nil || st.Leader != st.Header.MemberId {
		return nil // not the leader, or no answer: nothing to hand over
	}
	ms, err := etcd.Members(ctx, cli)
	if err != nil {
		return fmt.Errorf("hand etcd leadership over: %w", err)
	}
	if err := moveLeader(ctx, cli, ms, st.Header.MemberId); err != nil {
		// A single member has nobody to hand over to.
		if len(ms) == 1 {
			return nil
		}
		return fmt.Errorf("hand etcd leadership over: %w", err)
	}
	m.run.Printf("etcd leadership handed over")
	return nil
}
