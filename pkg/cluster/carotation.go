package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-master/k8s-master/pkg/addons"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/nodebootstrap"
	"github.com/k8s-master/k8s-master/pkg/pki"
)

// CA rotation (k8s-master certs rotate-ca) replaces the cluster, the
// front-proxy and the etcd CA while the cluster serves. The command records the
// rotation in etcd and moves it through pki.Phases; every master's
// caRotator converges its files to the recorded phase and reports it, and
// the command moves on only once every registered master has. All state
// is in etcd, so a command or a master killed at any point is picked up by
// running the command again, and a master that was down catches up.
//
//	trust    the new CAs are trusted next to the old ones (trust bundles,
//	         kubeconfigs, cluster-info); checked: the local apiserver
//	         accepts a client certificate of the new CA
//	clients  the new CA signs kubelet CSRs and the client leaves only
//	         masters verify (admin, controller-manager, scheduler,
//	         front-proxy client); a new admin kubeconfig; the window runs
//	serve    after the window: the leaves outside clients verify (apiserver
//	         and join service serving, the apiserver's kubelet client) are
//	         re-issued from the new CA; checked: the local apiserver serves
//	         a certificate the new CA alone verifies
//	drop     the old CAs leave every bundle; checked: the local apiserver
//	         refuses a client certificate of the old CA
//
//
// The etcd CA follows the same phases: its bundle changes in phases trust
// and drop, and etcd loads a bundle only when its member starts, so each
// master then restarts its member in place, one at a time
// (reloadEtcdTrust). The members' certificates move to the new etcd CA in
// phase serve, the apiserver-etcd client certificate in phase clients.
// The apiserver reaches its member over a unix socket without TLS, and
// the master's own etcd clients verify against the bundle of the moment,
// so nothing else needs a restart.

const (
	caRotationKey     = "/k8s-master/ca-rotation/state"
	caRotationApplied = "/k8s-master/ca-rotation/applied/"
	caRotationLast    = "/k8s-master/ca-rotation/last"
	// clientRefresh bounds how long client-go takes to reload a CA file
	// or a client certificate named by path (transport/ca_rotation.go and
	// cert_rotation.go look every 5 minutes): the controller-manager,
	// scheduler and the master's own clients trust the new CA and present
	// their new certificates that long after phase clients at the latest,
	// so the serving certificates move to the new CA, and the old CA is
	// dropped, no sooner.
	clientRefresh = 5*time.Minute + 30*time.Second
	// TestRotateStopAfterEnv names a phase after which `certs rotate-ca`
	// stops, as if killed (tests of an interrupted rotation only).
	TestRotateStopAfterEnv = "K8S_MASTER_TEST_ROTATE_CA_STOP_AFTER"
)

// caKind is one rotated CA: the name in the record, its directory, the
// file stem and the common name of a new one.
type caKind struct {
	kind string
	etcd bool // under pki/etcd, else pki
	name string
	cn   string
}

func (k caKind) dir(c *config.Config) string {
	if k.etcd {
		return c.Layout().EtcdPKIDir()
	}
	return c.Layout().PKIDir()
}

var caKinds = []caKind{
	{kind: "cluster", name: pki.ClusterCA, cn: "kubernetes"},
	{kind: "front-proxy", name: pki.FrontProxyCA, cn: "front-proxy-ca"},
	{kind: "etcd", etcd: true, name: pki.EtcdCA, cn: "etcd-ca"},
}

// caRotation is the record in etcd.
type caRotation struct {
	ID    string `json:"id"`
	Phase string `json:"phase"`
	// WindowSeconds is how long clients holding only the old CAs keep
	// working after phase clients is in force everywhere.
	WindowSeconds float64   `json:"windowSeconds"`
	Started       time.Time `json:"started"`
	// TrustedAt: every master trusted the new CAs; ClientsAt: every
	// master switched its client leaves (the window starts).
	TrustedAt time.Time `json:"trustedAt,omitzero"`
	ClientsAt time.Time `json:"clientsAt,omitzero"`
	// Old and New hold the CAs by kind, with their keys: a master that
	// joins or comes back mid-way takes them from here. Deleted at the end.
	Old map[string]pki.CAFiles `json:"old"`
	New map[string]pki.CAFiles `json:"new"`
}

func (r *caRotation) window() time.Duration {
	return time.Duration(r.WindowSeconds * float64(time.Second))
}

// serveAt is when phase serve may begin: the window after phase clients,
// and no sooner than clientRefresh.
func (r *caRotation) serveAt() time.Time {
	return r.ClientsAt.Add(max(r.window(), clientRefresh))
}

// nextPhase is the phase after p, "" after the last.
func nextPhase(p string) string {
	i := slices.Index(pki.Phases, p)
	if i < 0 || i+1 == len(pki.Phases) {
		return ""
	}
	return pki.Phases[i+1]
}

// caApplied is a master's report of the phase its files are in.
type caApplied struct {
	ID    string    `json:"id"`
	Phase string    `json:"phase"`
	At    time.Time `json:"at"`
}

// caLast records the last finished rotation, for status.
type caLast struct {
	ID       string    `json:"id"`
	Finished time.Time `json:"finished"`
}

func readCARotation(ctx context.Context, cli *clientv3.Client) (*caRotation, int64, error) {
	resp, err := cli.Get(ctx, caRotationKey)
	if err != nil {
		return nil, 0, fmt.Errorf("read the CA rotation record: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	var r caRotation
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return nil, 0, fmt.Errorf("CA rotation record %s: %w", caRotationKey, err)
	}
	return &r, resp.Kvs[0].ModRevision, nil
}

// saveCARotation writes r if the record is still at rev (0: absent).
func saveCARotation(ctx context.Context, cli *clientv3.Client, r *caRotation, rev int64) (int64, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(caRotationKey), "=", rev)).
		Then(clientv3.OpPut(caRotationKey, string(data))).Commit()
	if err != nil {
		return 0, fmt.Errorf("record the CA rotation: %w", err)
	}
	if !resp.Succeeded {
		return 0, errors.New("the CA rotation record changed under this command: is another `certs rotate-ca` running? Let it finish, or rerun this one")
	}
	return resp.Header.Revision, nil
}

func readCAApplied(ctx context.Context, cli *clientv3.Client) (map[string]caApplied, error) {
	resp, err := cli.Get(ctx, caRotationApplied, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read the masters' CA rotation reports: %w", err)
	}
	out := map[string]caApplied{}
	for _, kv := range resp.Kvs {
		var a caApplied
		if json.Unmarshal(kv.Value, &a) == nil {
			out[strings.TrimPrefix(string(kv.Key), caRotationApplied)] = a
		}
	}
	return out, nil
}

// newCARotation makes the record of a new rotation from this master's CAs.
func newCARotation(c *config.Config, window time.Duration, now time.Time) (*caRotation, error) {
	r := &caRotation{ID: randomID(), Phase: pki.PhaseTrust, WindowSeconds: window.Seconds(), Started: now,
		Old: map[string]pki.CAFiles{}, New: map[string]pki.CAFiles{}}
	for _, k := range caKinds {
		dir := k.dir(c)
		for _, stem := range []string{pki.NextName(k.name), pki.OldName(k.name)} {
			if _, err := os.Stat(pki.CertPath(dir, stem)); err == nil {
				return nil, fmt.Errorf("%s exists but no CA rotation is recorded in etcd: a rotation's files were left behind; move them away, then rerun", pki.CertPath(dir, stem))
			}
		}
		old, err := pki.LoadCA(dir, k.name)
		if err != nil {
			return nil, fmt.Errorf("load the %s CA: %w", k.kind, err)
		}
		next, err := pki.NewCA(k.cn, now)
		if err != nil {
			return nil, err
		}
		if r.Old[k.kind], err = old.Files(); err != nil {
			return nil, err
		}
		if r.New[k.kind], err = next.Files(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// RotateCA runs `certs rotate-ca`: it starts a rotation (or carries on the
// one recorded) and takes it through every phase, waiting for every
// registered master at each. window applies to a new rotation, and to one
// under way when windowSet.
func (a *Admin) RotateCA(ctx context.Context, window time.Duration, windowSet bool, out io.Writer) error {
	cli := a.cli
	r, rev, err := readCARotation(ctx, cli)
	if err != nil {
		return err
	}
	if r == nil {
		if r, err = newCARotation(a.Config, window, time.Now()); err != nil {
			return err
		}
		if rev, err = saveCARotation(ctx, cli, r, 0); err != nil {
			return err
		}
		fmt.Fprintf(out, "CA rotation %s started: new cluster, front-proxy and etcd CAs; window %s\n", r.ID, window)
	} else {
		fmt.Fprintf(out, "CA rotation %s under way (phase %s): carrying on\n", r.ID, r.Phase)
		if windowSet && window.Seconds() != r.WindowSeconds {
			r.WindowSeconds = window.Seconds()
			if rev, err = saveCARotation(ctx, cli, r, rev); err != nil {
				return err
			}
			fmt.Fprintf(out, "window set to %s\n", window)
		}
	}
	stopAfter := os.Getenv(TestRotateStopAfterEnv)
	for {
		if err := a.waitApplied(ctx, r, out); err != nil {
			return err
		}
		fmt.Fprintf(out, "phase %s: in force on every master\n", r.Phase)
		switch r.Phase {
		case pki.PhaseTrust:
			if r.TrustedAt.IsZero() {
				r.TrustedAt = time.Now()
			}
		case pki.PhaseClients:
			if r.ClientsAt.IsZero() {
				r.ClientsAt = time.Now()
				fmt.Fprintf(out, "new admin kubeconfig written on every master (%s); clients holding only the old CAs keep working until %s\n",
					a.Config.Layout().AdminKubeconfig(), r.serveAt().Local().Format(time.RFC3339))
			}
		case pki.PhaseDrop:
			return a.finishRotation(ctx, r, out)
		}
		if rev, err = saveCARotation(ctx, cli, r, rev); err != nil {
			return err
		}
		if stopAfter == r.Phase {
			fmt.Fprintf(out, "stopping after phase %s (%s)\n", r.Phase, TestRotateStopAfterEnv)
			return nil
		}
		if r.Phase == pki.PhaseClients {
			a.warnWorkers(ctx, out)
			if err := waitUntil(ctx, r.serveAt(), out); err != nil {
				return err
			}
		}
		if r.Phase == pki.PhaseServe {
			cs, err := a.Kube()
			if err != nil {
				return err
			}
			if err := waitKubeletsServing(ctx, cs, r.Old["cluster"].Cert, r.New["cluster"].Cert, out); err != nil {
				return err
			}
		}
		r.Phase = nextPhase(r.Phase)
		if rev, err = saveCARotation(ctx, cli, r, rev); err != nil {
			return err
		}
		fmt.Fprintf(out, "phase %s: recorded; waiting for every master\n", r.Phase)
	}
}

// warnWorkers says what the window is for when the cluster has worker
// nodes: the node agent moves their kubelets onto the new CA during it;
// a node without a ready agent needs the operator (docs/certificates.md).
func (a *Admin) warnWorkers(ctx context.Context, out io.Writer) {
	cs, err := a.Kube()
	if err != nil {
		return
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		return
	}
	ready := int32(0)
	if ds, err := cs.AppsV1().DaemonSets(metav1.NamespaceSystem).Get(ctx, addons.NodeAgentDaemonSet, metav1.GetOptions{}); err == nil {
		ready = ds.Status.NumberReady
	}
	if int(ready) >= len(nodes.Items) {
		fmt.Fprintf(out, "workers: the node agent runs on all %d node(s) and moves their kubelets onto the new CA during the window (each kubelet restarts; pods stay)\n", len(nodes.Items))
		return
	}
	fmt.Fprintf(out, "warning: %d worker node(s), the node agent ready on %d: a kubelet that joined before this rotation and has no agent trusts only the old CA and holds a client certificate of it; before the window ends load the agent's image on those nodes (k8s-master node-agent image), or give each the CA bundle and a client certificate of the new CA, or rejoin it; see docs/certificates.md\n", len(nodes.Items), ready)
}

// waitUntil sleeps until t, saying so.
func waitUntil(ctx context.Context, t time.Time, out io.Writer) error {
	if d := time.Until(t); d > 0 {
		fmt.Fprintf(out, "window: the old CAs stay trusted for %s more (until %s); interrupting is safe, a rerun waits the rest\n", d.Round(time.Second), t.Local().Format(time.RFC3339))
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted during the window: rerun k8s-master certs rotate-ca to finish: %w", ctx.Err())
		case <-time.After(d):
		}
	}
	return nil
}

// caApplyTimeout bounds the wait for the masters at one phase.
const caApplyTimeout = 10 * time.Minute

// waitApplied waits until every registered master reports r's phase.
func (a *Admin) waitApplied(ctx context.Context, r *caRotation, out io.Writer) error {
	deadline := time.Now().Add(caApplyTimeout)
	lastNote := time.Now()
	for {
		masters, err := a.Store().Masters(ctx)
		if err != nil {
			return err
		}
		applied, err := readCAApplied(ctx, a.cli)
		if err != nil {
			return err
		}
		var pending []string
		for _, m := range masters {
			if got := applied[m.Name]; got.ID != r.ID || got.Phase != r.Phase {
				pending = append(pending, m.Name)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not apply phase %s of the CA rotation within %s: check that each runs (k8s-master status) and its log, then rerun k8s-master certs rotate-ca, which carries on from phase %s",
				strings.Join(pending, ", "), r.Phase, caApplyTimeout, r.Phase)
		}
		if time.Since(lastNote) >= 10*time.Second {
			fmt.Fprintf(out, "phase %s: waiting for %s\n", r.Phase, strings.Join(pending, ", "))
			lastNote = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted in phase %s: rerun k8s-master certs rotate-ca to carry on: %w", r.Phase, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// finishRotation removes the record (with the CA keys it holds) and the
// reports, and keeps a note for status.
func (a *Admin) finishRotation(ctx context.Context, r *caRotation, out io.Writer) error {
	last, err := json.Marshal(caLast{ID: r.ID, Finished: time.Now()})
	if err != nil {
		return err
	}
	if _, err := a.cli.Txn(ctx).Then(
		clientv3.OpDelete(caRotationKey),
		clientv3.OpDelete(caRotationApplied, clientv3.WithPrefix()),
		clientv3.OpPut(caRotationLast, string(last)),
	).Commit(); err != nil {
		return fmt.Errorf("finish the CA rotation record (rerun k8s-master certs rotate-ca): %w", err)
	}
	fmt.Fprintf(out, "CA rotation %s done: the old cluster, front-proxy and etcd CAs are trusted nowhere; use the new admin kubeconfig (%s)\n", r.ID, a.Config.Layout().AdminKubeconfig())
	return nil
}

// CARotationStatus is the CA rotation as `status` shows it.
type CARotationStatus struct {
	ID    string `json:"id"`
	Phase string `json:"phase"`
	// WindowEnds is when the old CAs stop being served (set once the
	// window runs).
	WindowEnds time.Time `json:"windowEnds,omitzero"`
	// Masters maps each registered master to the phase it has applied
	// ("" for none yet).
	Masters map[string]string `json:"masters"`
	// Finished is set for the last finished rotation (Phase "done").
	Finished time.Time `json:"finished,omitzero"`
}

func (a *Admin) caRotationStatus(ctx context.Context, masters []string) (*CARotationStatus, error) {
	r, _, err := readCARotation(ctx, a.cli)
	if err != nil {
		return nil, err
	}
	if r == nil {
		resp, err := a.cli.Get(ctx, caRotationLast)
		if err != nil || len(resp.Kvs) == 0 {
			return nil, err
		}
		var l caLast
		if err := json.Unmarshal(resp.Kvs[0].Value, &l); err != nil {
			return nil, err
		}
		return &CARotationStatus{ID: l.ID, Phase: "done", Finished: l.Finished}, nil
	}
	applied, err := readCAApplied(ctx, a.cli)
	if err != nil {
		return nil, err
	}
	s := &CARotationStatus{ID: r.ID, Phase: r.Phase, Masters: map[string]string{}}
	if !r.ClientsAt.IsZero() {
		s.WindowEnds = r.serveAt()
	}
	for _, m := range masters {
		if got := applied[m]; got.ID == r.ID {
			s.Masters[m] = got.Phase
		} else {
			s.Masters[m] = ""
		}
	}
	return s, nil
}

// caRotator is the part of every master that applies the recorded phase
// of a CA rotation to its files and reports it.
type caRotator struct {
	m        *Master
	cli      *clientv3.Client
	renewer  *certRenewer
	interval time.Duration
	logf     func(string, ...any)

	cancel context.CancelFunc
	done   chan struct{}
}

func (c *caRotator) Name() string { return "CA rotation" }

func (c *caRotator) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		t := time.NewTicker(c.interval)
		defer t.Stop()
		failing := ""
		for {
			if err := c.step(ctx); err != nil && err.Error() != failing {
				// Once per distinct error: the step is retried every tick.
				failing = err.Error()
				c.logf("warning: CA rotation: %v (retried every %s)", err, c.interval)
			} else if err == nil {
				failing = ""
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

func (c *caRotator) Stop(context.Context) error {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
	return nil
}

// step applies the recorded phase once if this master has not yet.
func (c *caRotator) step(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	r, _, err := readCARotation(rctx, c.cli)
	cancel()
	if err != nil || r == nil {
		return err
	}
	name := c.m.cfg.Name
	rctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	applied, err := readCAApplied(rctx, c.cli)
	cancel()
	if err != nil {
		return err
	}
	if got := applied[name]; got.ID == r.ID && got.Phase == r.Phase {
		return nil
	}
	if err := c.apply(ctx, r); err != nil {
		return fmt.Errorf("phase %s: %w", r.Phase, err)
	}
	data, err := json.Marshal(caApplied{ID: r.ID, Phase: r.Phase, At: time.Now()})
	if err != nil {
		return err
	}
	rctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.cli.Put(rctx, caRotationApplied+name, string(data)); err != nil {
		return fmt.Errorf("report phase %s: %w", r.Phase, err)
	}
	c.logf("CA rotation %s: phase %s in force on this master", r.ID, r.Phase)
	return nil
}

// apply converges this master's files to r's phase, then checks that the
// apiserver and the etcd member act on them.
func (c *caRotator) apply(ctx context.Context, r *caRotation) error {
	cfg := c.m.cfg
	cas := map[string][2]*pki.CA{}
	for _, k := range caKinds {
		if _, ok := r.Old[k.kind]; !ok {
			// A rotation recorded by a version that did not rotate this kind.
			continue
		}
		old, err := pki.ParseCAFiles(r.Old[k.kind])
		if err != nil {
			return fmt.Errorf("old %s CA in the rotation record: %w", k.kind, err)
		}
		next, err := pki.ParseCAFiles(r.New[k.kind])
		if err != nil {
			return fmt.Errorf("new %s CA in the rotation record: %w", k.kind, err)
		}
		cas[k.kind] = [2]*pki.CA{old, next}
	}
	// The cluster's recorded pin names the CA that signs the join
	// service's certificate (join tokens and kubeadm join lines carry it):
	// the new one from phase serve. Recorded before the files change, so
	// that a master killed in between still finds its pin among its CAs.
	pinCA := cas["cluster"][0]
	if r.Phase == pki.PhaseServe || r.Phase == pki.PhaseDrop {
		pinCA = cas["cluster"][1]
	}
	if err := c.m.recordCAPin(pki.Pin(pinCA.Cert)); err != nil {
		return err
	}
	// One writer of the leaves at a time: the renewer's lock.
	c.renewer.mu.Lock()
	for _, k := range caKinds {
		pair, ok := cas[k.kind]
		if !ok {
			continue
		}
		if err := pki.ConvergeCA(k.dir(cfg), k.name, r.Phase, pair[0], pair[1]); err != nil {
			c.renewer.mu.Unlock()
			return err
		}
	}
	// Leaves signed by a CA that changed role are re-issued, then the
	// bundles and kubeconfigs are rewritten.
	_, err := writeCredentials(cfg, false)
	c.renewer.mu.Unlock()
	if err != nil {
		return err
	}
	// cluster-info hands workers the bundle of now.
	if c.m.parts.workers != nil {
		if err := publishClusterInfo(ctx, cfg, c.cli); err != nil {
			return err
		}
	}
	// etcd trusts a changed bundle only once restarted (phases trust and
	// drop): each member in turn.
	if etcdCAs, ok := cas["etcd"]; ok {
		if err := c.m.reloadEtcdTrust(ctx, c.logf); err != nil {
			return err
		}
		switch r.Phase {
		case pki.PhaseTrust:
			if err := c.await(ctx, "etcd accepts client certificates of the new etcd CA", func() error {
				return probeEtcdClientCA(ctx, cfg, etcdCAs[1], true)
			}); err != nil {
				return err
			}
		case pki.PhaseDrop:
			if err := c.await(ctx, "etcd refuses client certificates of the old etcd CA", func() error {
				return probeEtcdClientCA(ctx, cfg, etcdCAs[0], false)
			}); err != nil {
				return err
			}
		}
	}
	cluster := cas["cluster"]
	switch r.Phase {
	case pki.PhaseTrust:
		return c.await(ctx, "the apiserver accepts client certificates of the new CA", func() error {
			return probeClientCA(ctx, cfg, cluster[1], true)
		})
	case pki.PhaseServe:
		return c.await(ctx, "the apiserver serves a certificate of the new CA", func() error {
			return probeServing(ctx, cfg, cluster[1])
		})
	case pki.PhaseDrop:
		return c.await(ctx, "the apiserver refuses client certificates of the old CA", func() error {
			return probeClientCA(ctx, cfg, cluster[0], false)
		})
	}
	return nil
}

// await retries check for up to 90 s: the apiserver picks up changed
// files within a minute (file watch, else its one-minute resync).
func (c *caRotator) await(ctx context.Context, what string, check func() error) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after 90 s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// probeUser is the user a probe certificate names; it has no rights, so
// the apiserver answers 403 naming it when it verified the certificate,
// and names system:anonymous when it did not.
const probeUser = "k8s-master:ca-rotation-probe"

// probePair is a throwaway client certificate of ca naming probeUser.
func probePair(ca *pki.CA) (tls.Certificate, error) {
	certPEM, keyPEM, err := ca.IssueLeaf(pki.LeafSpec{Name: "probe", CommonName: probeUser, Usage: pki.ClientAuth}, time.Now())
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// probeClientCA asks the local apiserver with a throwaway client
// certificate of ca and checks that it is accepted (want) or not.
func probeClientCA(ctx context.Context, c *config.Config, ca *pki.CA, want bool) error {
	pair, err := probePair(ca)
	if err != nil {
		return err
	}
	roots, err := trustPool(c)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.LocalAPIServerURL()+"/api/v1/namespaces/kube-system/secrets", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	accepted := resp.StatusCode == http.StatusForbidden && strings.Contains(string(body), probeUser)
	if accepted != want {
		return fmt.Errorf("answer %d %q", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// probeServing checks that the local apiserver's certificate verifies
// against ca alone.
func probeServing(ctx context.Context, c *config.Config, ca *pki.CA) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	d := tls.Dialer{Config: &tls.Config{RootCAs: pool}}
	conn, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(c.LocalAPIServerURL(), "https://"))
	if err != nil {
		return err
	}
	return conn.Close()
}

// probeEtcdClientCA asks the local etcd member's client port for /health
// with a throwaway client certificate of ca and checks that the member
// accepts it (want) or refuses it.
func probeEtcdClientCA(ctx context.Context, c *config.Config, ca *pki.CA, want bool) error {
	pair, err := probePair(ca)
	if err != nil {
		return err
	}
	tlsCfg, err := etcd.ClientTLSConfig(c)
	if err != nil {
		return err
	}
	tlsCfg.GetClientCertificate = nil
	tlsCfg.Certificates = []tls.Certificate{pair}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: tlsCfg}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.LocalEtcdURL()+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	accepted := err == nil
	if err == nil {
		resp.Body.Close()
		accepted = resp.StatusCode == http.StatusOK
	}
	if accepted != want {
		if err != nil {
			return fmt.Errorf("refused: %w", err)
		}
		return fmt.Errorf("answer %s", resp.Status)
	}
	return nil
}

func trustPool(c *config.Config) (*x509.CertPool, error) {
	data, err := os.ReadFile(pki.TrustFile(c.Layout().PKIDir(), pki.ClusterCA))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(data)
	return pool, nil
}

// publishClusterInfo rewrites the objects workers read (cluster-info with
// the CA bundle).
func publishClusterInfo(ctx context.Context, c *config.Config, cli *clientv3.Client) error {
	cs, err := localAdminClient(c)
	if err != nil {
		return err
	}
	s, err := workerSettings(ctx, c, join.NewStore(cli, nil))
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := nodebootstrap.Apply(actx, cs, s); err != nil {
		return fmt.Errorf("publish cluster-info with the new CA bundle: %w", err)
	}
	return nil
}

// recordCAPin sets the cluster CA pin in state.json and in the state the
// join service answers with.
func (m *Master) recordCAPin(pin string) error {
	if m.state.CAPin == pin {
		return nil
	}
	st := *m.state
	st.CAPin = pin
	if err := config.WriteState(m.cfg.Layout().State(), &st); err != nil {
		return fmt.Errorf("record the new CA pin in %s: %w", m.cfg.Layout().State(), err)
	}
	// A plain string store the join service reads per request; a join
	// racing it is refused with a pin mismatch and retried by the joiner.
	m.state.CAPin = pin
	return nil
}
