package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/k8s-master/k8s-master/pkg/addons"
	"github.com/k8s-master/k8s-master/pkg/certs"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/control"
	"github.com/k8s-master/k8s-master/pkg/datadir"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/etcdspace"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/layout"
	"github.com/k8s-master/k8s-master/pkg/poll"
	"github.com/k8s-master/k8s-master/pkg/secretskey"
	"github.com/k8s-master/k8s-master/pkg/snapshot"
	"github.com/k8s-master/k8s-master/pkg/version"
	"github.com/k8s-master/k8s-master/pkg/vip"
)

// Admin runs operator commands (status, tokens, leave, member remove)
// against the cluster of a data directory, from a separate process.
type Admin struct {
	Config *config.Config
	State  *config.State
	cli    *clientv3.Client
}

// OpenAdmin reads the data directory's state and connects to the local etcd
// member.
func OpenAdmin(dataDir string) (*Admin, error) {
	st, err := config.ReadState(layout.Layout{Root: dataDir}.State())
	if errors.Is(err, config.ErrNoState) {
		return nil, fmt.Errorf("%s holds no master; %w", dataDir, config.Hint("pass the {data-dir} of a master"))
	}
	if err != nil {
		return nil, err
	}
	c := st.Config
	c.DataDir = dataDir
	cli, err := etcd.NewClient(&c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Status(ctx, c.LocalEtcdURL()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("the local etcd member at %s does not answer (%v); is the master running? (k8s-master start --data-dir %s)", c.LocalEtcdURL(), err, dataDir)
	}
	return &Admin{Config: &c, State: st, cli: cli}, nil
}

// Close releases the connection.
func (a *Admin) Close() { a.cli.Close() }

// Store is the token and masters store.
func (a *Admin) Store() *join.Store { return join.NewStore(a.cli, nil) }

// MemberView is one member in `status`.
type MemberView struct {
	etcd.MemberStatus
	APIServerReady bool   `json:"apiserverReady"`
	APIServerURL   string `json:"apiserverURL,omitempty"`
	// Versions: Kubernetes as its apiserver reports it, etcd as its member
	// does, the release as the master registered it (each falling back to
	// the registration when the part does not answer).
	Versions version.Versions `json:"versions"`
}

// Status is the cluster as `status` shows it.
type Status struct {
	ClusterID string       `json:"clusterID"`
	Members   []MemberView `json:"members"`
	etcd.QuorumSummary
	VIP *VIPStatus `json:"vip,omitempty"`
	// Mixed is set while the masters run different versions (an upgrade
	// under way); Upgrade then says what is left to do.
	Mixed   bool   `json:"mixed"`
	Upgrade string `json:"upgrade,omitempty"`
	// Space is etcd's NOSPACE alarm, when raised.
	Space *SpaceAlarm `json:"etcdSpaceAlarm,omitempty"`
	// Snapshots is each master's scheduled-snapshot state.
	Snapshots []snapshot.Record `json:"snapshots"`
	// Addons are kube-proxy's and CoreDNS's workloads; nil when no
	// apiserver answered.
	Addons []addons.Status `json:"addons"`
	// SecretsEncryption is the key in use and the rotation state.
	SecretsEncryption *secretskey.Status `json:"secretsEncryption,omitempty"`
	// CARotation is the CA rotation under way, or the last one finished.
	CARotation *CARotationStatus `json:"caRotation,omitempty"`
	Warnings   []string          `json:"warnings"`
}

// SpaceAlarm is etcd's NOSPACE alarm as `status` explains it.
type SpaceAlarm struct {
	Alarm string `json:"alarm"`
	// What happened and what to do, in words.
	What string `json:"what"`
	Do   string `json:"do"`
}

// spaceAlarm explains NOSPACE from the members' sizes: whether the data
// itself fills the quota (only deleting helps) or the space keeper is about
// to give free pages back.
func spaceAlarm(ms []etcd.MemberStatus) *SpaceAlarm {
	a := &SpaceAlarm{
		Alarm: "NOSPACE",
		What:  "etcd's database reached its quota: the cluster refuses writes (\"etcdserver: mvcc: database space exceeded\"); reads still work",
		Do:    "delete objects that are not needed (kubectl delete ...); each master's space keeper then compacts, defragments and disarms the alarm by itself within seconds, with no restart. If the data really needs the room, raise --etcd-quota-bytes (etcd-quota-bytes in the configuration file) on every master and restart them one at a time",
	}
	for _, m := range ms {
		if m.DBSizeQuota > 0 && m.DBSizeInUse*10 >= m.DBSizeQuota*9 {
			a.What += fmt.Sprintf("; on %s the data itself fills %d%% of the quota", m.Name, m.DBSizeInUse*100/m.DBSizeQuota)
		}
	}
	return a
}

// VIPStatus says who holds the VIP; Holder is "" when nobody does.
type VIPStatus struct {
	Address string    `json:"address"`
	Holder  string    `json:"holder"`
	Since   time.Time `json:"since,omitzero"`
}

// Status gathers every member's state and each master's apiserver
// readiness.
func (a *Admin) Status(ctx context.Context) (*Status, error) {
	ms, err := etcd.Members(ctx, a.cli)
	if err != nil {
		return nil, err
	}
	masters, err := a.Store().Masters(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]join.MasterInfo{}
	for _, m := range masters {
		byName[m.Name] = m
	}
	st := &Status{ClusterID: a.State.ClusterID, QuorumSummary: etcd.Summarize(ms), Warnings: etcd.Warnings(ms)}
	if a.Config.VIP != "" {
		h, _, err := vip.ReadHolder(ctx, a.cli)
		if err != nil {
			return nil, err
		}
		st.VIP = &VIPStatus{Address: a.Config.VIP}
		if h != nil {
			st.VIP.Holder, st.VIP.Since = h.Name, h.Since
		} else {
			st.Warnings = append(st.Warnings, fmt.Sprintf("no master holds VIP %s", a.Config.VIP))
		}
	}
	full, err := etcdspace.NoSpace(ctx, a.cli)
	if err != nil {
		return nil, err
	}
	if full {
		st.Space = spaceAlarm(ms)
		st.Warnings = append(st.Warnings, "etcd NOSPACE alarm: writes are refused; "+st.Space.Do)
	}
	client := a.apiClient()
	for _, m := range ms {
		v := MemberView{MemberStatus: m}
		if info, ok := byName[m.Name]; ok {
			v.Versions = version.Legacy
			if info.Versions != nil {
				v.Versions = *info.Versions
			}
			v.APIServerURL = "https://" + config.Host(info.AdvertiseAddress, info.APIServerPort)
			if client != nil {
				v.APIServerReady = ready(ctx, client, v.APIServerURL+"/readyz")
				if k := apiserverVersion(ctx, client, v.APIServerURL); k != "" {
					v.Versions.Kubernetes = k
				}
			}
		}
		if m.Healthy && m.Version != "" {
			v.Versions.Etcd = m.Version
		}
		if m.Started() && !m.Learner && !v.APIServerReady {
			st.Warnings = append(st.Warnings, fmt.Sprintf("the apiserver of %s is not ready", m.Name))
		}
		st.Members = append(st.Members, v)
	}
	st.Mixed, st.Upgrade = upgradeProgress(st.Members)
	if st.Snapshots, err = snapshot.ReadRecords(ctx, a.cli); err != nil {
		return nil, err
	}
	for _, r := range st.Snapshots {
		if w := snapshotWarning(r); w != "" {
			st.Warnings = append(st.Warnings, w)
		}
	}
	st.Addons, st.Warnings = a.addonStatus(ctx, st.Warnings)
	st.SecretsEncryption, st.Warnings = a.secretsKeyStatus(ctx, st.Warnings)
	var names []string
	for _, m := range masters {
		names = append(names, m.Name)
	}
	if st.CARotation, err = a.caRotationStatus(ctx, names); err != nil {
		return nil, err
	}
	// This master's certificates (and the cluster's CAs, which every
	// master shares).
	if cs, err := certs.Check(a.Config.Layout().PKIDir(), time.Now()); err == nil {
		for _, w := range certs.Warnings(cs, time.Now()) {
			st.Warnings = append(st.Warnings, a.Config.Name+": "+w)
		}
	}
	if st.Warnings == nil {
		st.Warnings = []string{}
	}
	return st, nil
}

// apiserverVersion is the gitVersion an apiserver reports on /version
// (readable without credentials), "" when it does not answer.
func apiserverVersion(ctx context.Context, client *http.Client, base string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/version", nil)
	if err != nil {
		return ""
	}
	resp, err := client.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var info struct {
		GitVersion string `json:"gitVersion"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&info) != nil {
		return ""
	}
	return info.GitVersion
}

// upgradeProgress tells whether the masters run different versions and,
// if so, which ones are behind the newest and what to do.
func upgradeProgress(ms []MemberView) (bool, string) {
	var newest *version.Versions
	for i := range ms {
		v := &ms[i].Versions
		if v.Kubernetes == "" {
			continue
		}
		if newest == nil {
			newest = v
		} else if c, _ := version.Compare(*v, *newest); c > 0 {
			newest = v
		}
	}
	if newest == nil {
		return false, ""
	}
	// Names by what they run, newest first.
	byVersion := map[version.Versions][]string{}
	var order []version.Versions
	for _, m := range ms {
		if m.Versions.Kubernetes == "" {
			continue
		}
		if _, ok := byVersion[m.Versions]; !ok {
			order = append(order, m.Versions)
		}
		byVersion[m.Versions] = append(byVersion[m.Versions], m.Name)
	}
	if len(order) < 2 {
		return false, ""
	}
	slices.SortStableFunc(order, func(a, b version.Versions) int {
		if a == *newest {
			return -1
		}
		if b == *newest {
			return 1
		}
		return 0
	})
	var parts, behind []string
	for _, v := range order {
		names := byVersion[v]
		verb := "runs"
		if len(names) > 1 {
			verb = "run"
		}
		parts = append(parts, fmt.Sprintf("%s %s %s", strings.Join(names, ", "), verb, v))
		if v != *newest {
			behind = append(behind, names...)
		}
	}
	return true, fmt.Sprintf("mixed versions: %s. Still to upgrade: %s, one at a time, each back and healthy (k8s-master status) before the next",
		strings.Join(parts, "; "), strings.Join(behind, ", "))
}

func (a *Admin) apiClient() *http.Client {
	client, err := clusterCAClient(a.Config, 2*time.Second, "")
	if err != nil {
		return nil
	}
	return client
}

// clusterCAClient is an HTTPS client that trusts the cluster CA bundle;
// serverName, when set, is the name the server's certificate must have.
// It reads the bundle for every connection: the VIP's health check keeps
// its client for the master's life, across CA rotations.
func clusterCAClient(c *config.Config, timeout time.Duration, serverName string) (*http.Client, error) {
	if _, err := trustPool(c); err != nil {
		return nil, err
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			roots, err := trustPool(c)
			if err != nil {
				return nil, err
			}
			name := serverName
			if name == "" {
				if name, _, err = net.SplitHostPort(addr); err != nil {
					return nil, err
				}
			}
			d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: name}}
			return d.DialContext(ctx, network, addr)
		},
	}}, nil
}

func ready(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// CreateToken makes a join token naming every registered master's join
// service.
func (a *Admin) CreateToken(ctx context.Context, ttl time.Duration, usages int, description string) (join.Token, error) {
	masters, err := a.Store().Masters(ctx)
	if err != nil {
		return join.Token{}, err
	}
	var eps []string
	if a.Config.VIP != "" {
		// The VIP first: it answers as long as any master is healthy.
		eps = append(eps, config.Host(a.Config.VIP, a.Config.JoinPort))
	}
	for _, m := range masters {
		eps = append(eps, config.Host(m.AdvertiseAddress, m.JoinPort))
	}
	tok, _, err := a.Store().CreateToken(ctx, eps, a.State.CAPin, ttl, usages, description)
	return tok, err
}

func (a *Admin) findMember(ctx context.Context, name string) ([]etcd.MemberStatus, *etcd.MemberStatus, error) {
	ms, err := etcd.Members(ctx, a.cli)
	if err != nil {
		return nil, nil, err
	}
	for i := range ms {
		if ms[i].Name == name || (ms[i].Name == "" && ms[i].IDHex == name) {
			return ms, &ms[i], nil
		}
	}
	return ms, nil, fmt.Errorf("no member named %s; see k8s-master status", name)
}

// RemoveMember removes another master (one that is dead for good) from
// etcd and the registry, with the quorum guard unless force.
func (a *Admin) RemoveMember(ctx context.Context, name string, force bool) error {
	if name == a.Config.Name {
		return fmt.Errorf("%s is this master; use k8s-master leave", name)
	}
	ms, target, err := a.findMember(ctx, name)
	if err != nil {
		return err
	}
	if !force {
		if err := etcd.CheckRemove(ms, target.ID); err != nil {
			return err
		}
	}
	if err := removeMember(ctx, a.cli, target.ID); err != nil {
		return err
	}
	if target.Name != "" {
		if err := a.Store().UnregisterMaster(ctx, target.Name); err != nil {
			return fmt.Errorf("member removed, but its registration stays: %w", err)
		}
	}
	return nil
}

// removeMember removes an etcd member. etcd's strict reconfiguration check
// answers "unhealthy cluster" until the remaining members have been
// connected for a few seconds (right after a join, say): that is waited out
// for up to 30 s.
func removeMember(ctx context.Context, cli *clientv3.Client, id uint64) error {
	var last error
	return poll.Until(ctx, time.Second, 30*time.Second, func(ctx context.Context) (bool, error) {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, last = cli.MemberRemove(rctx, id)
		if last != nil && !etcd.IsUnhealthy(last) {
			return false, fmt.Errorf("etcd member remove: %w", last)
		}
		return last == nil, nil
	}, func() error { return fmt.Errorf("etcd member remove: %w", last) })
}

// moveLeader makes another healthy voter the etcd leader; cli must reach
// the current leader.
func moveLeader(ctx context.Context, cli *clientv3.Client, ms []etcd.MemberStatus, self uint64) error {
	for _, m := range ms {
		if m.ID == self || m.Learner || !m.Healthy {
			continue
		}
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := cli.MoveLeader(mctx, m.ID)
		cancel()
		return err
	}
	return errors.New("no other healthy voter")
}

// Leave takes this master out of the cluster: quorum guard, the running
// master told through its control socket (it gives the VIP up), its etcd
// member removed through the others, the master stopped, its state wiped
// so it can join again. note reports progress.
func (a *Admin) Leave(ctx context.Context, force bool, note func(string)) error {
	ms, self, err := a.findMember(ctx, a.Config.Name)
	if err != nil {
		return err
	}
	if !force {
		if err := etcd.CheckRemove(ms, self.ID); err != nil {
			return err
		}
	}
	others := etcd.ClientEndpoints(ms, self.ID)
	if len(others) == 0 {
		return errors.New("this is the only member; there is no cluster to leave (use k8s-master reset to remove it)")
	}
	// The running master is told through its control socket; without it
	// leave cannot go on: the member is removed while it runs.
	master, err := control.Dial(ctx, a.Config.DataDir)
	if err != nil {
		return err
	}
	if err := a.Store().UnregisterMaster(ctx, a.Config.Name); err != nil {
		return fmt.Errorf("unregister this master: %w", err)
	}
	// Remove the member while it still runs: in a two-member cluster both
	// are needed to commit the removal. Told first, the master gives the
	// VIP up and takes its member's removal as the end it is.
	if err := master.PrepareLeave(ctx); err != nil {
		return err
	}
	stay := func() {
		if err := master.CancelLeave(context.WithoutCancel(ctx)); err != nil {
			note("warning: " + err.Error())
		}
	}
	if a.Config.VIP != "" {
		note("handing the VIP over")
		if err := handOverVIP(ctx, a, 5*time.Second); err != nil {
			// The lease ends it within seconds anyway once the member goes.
			note("warning: " + err.Error())
		}
	}
	if self.Leader {
		// A removed leader leaves the others without one for an election
		// timeout or more: hand leadership over first, as a graceful etcd
		// stop does.
		if err := moveLeader(ctx, a.cli, ms, self.ID); err != nil {
			note("warning: could not hand etcd leadership over (" + err.Error() + "); the others elect a leader after the removal")
		} else {
			note("etcd leadership handed over")
		}
	}
	a.cli.Close()
	cli, err := etcd.NewClient(a.Config, others...)
	if err != nil {
		stay()
		return err
	}
	a.cli = cli
	note("removing the etcd member")
	if err := removeMember(ctx, cli, self.ID); err != nil {
		stay()
		return err
	}
	note("stopping the local master")
	if err := master.StopMaster(ctx, 30*time.Second); err != nil {
		return err
	}
	note("wiping the local etcd data and state")
	return datadir.RemoveOwnEntries(a.Config.DataDir)
}

// SaveSnapshot writes a recovery archive of this master's etcd member and
// the cluster's identity to out (pkg/snapshot).
func (a *Admin) SaveSnapshot(ctx context.Context, out string) (*snapshot.Manifest, error) {
	return snapshot.Save(ctx, snapshot.Source{Config: a.Config, State: a.State, Client: a.cli}, out)
}

// snapshotWarning says when a master's last scheduled snapshot failed. (A
// last success long ago is no sign of trouble: runs are skipped while
// nothing changes.)
func snapshotWarning(r snapshot.Record) string {
	if r.LastError != "" && r.LastErrorTime.After(r.LastSuccess) {
		return fmt.Sprintf("%s: the last scheduled snapshot failed at %s (%d failures so far): %s", r.Master, r.LastErrorTime.Local().Format(time.RFC3339), r.Failures, r.LastError)
	}
	return ""
}
