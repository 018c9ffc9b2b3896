package cluster

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-master/k8s-master/pkg/addons"
	"github.com/k8s-master/k8s-master/pkg/component"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/nodebootstrap"
	"github.com/k8s-master/k8s-master/pkg/version"
)

// clusterDNS is the cluster DNS address this master announces to kubelets
// and gives CoreDNS's Service: --cluster-dns, checked against the
// cluster's service range (on start, the recorded one), or its 10th
// address.
func clusterDNS(c *config.Config) (string, error) {
	if c.ClusterDNS == "" {
		ip, err := nodebootstrap.ClusterDNS(c.ServiceCIDR)
		if err != nil {
			return "", err
		}
		return ip.String(), nil
	}
	_, svc, err := net.ParseCIDR(c.ServiceCIDR)
	if err != nil {
		return "", fmt.Errorf("the cluster's service range %q: %w", c.ServiceCIDR, err)
	}
	if ip := net.ParseIP(c.ClusterDNS); ip == nil || !svc.Contains(ip) {
		return "", &config.SettingError{Setting: "cluster-dns", Value: config.Bare(c.ClusterDNS), Problem: "lies outside the cluster's service range " + svc.String() + "; pick an address of it, or drop {cluster-dns} for its 10th"}
	}
	return c.ClusterDNS, nil
}

// addonSettings are the add-ons this master applies when it leads.
func (m *Master) addonSettings() (addons.Settings, error) {
	c := m.cfg
	dns, err := clusterDNS(c)
	if err != nil {
		return addons.Settings{}, err
	}
	return addons.Settings{
		KubernetesVersion: version.Local().Kubernetes,
		Release:           version.Local().Release,
		ImageRepository:   c.ImageRepository,
		APIServer:         "https://" + m.workerEndpoint,
		ServiceCIDR:       c.ServiceCIDR, PodCIDR: c.PodCIDR, ClusterDomain: c.ClusterDomain,
		ClusterDNS: dns,
		Disabled:   c.DisabledAddons,
	}, nil
}

// addonStep starts the add-on manager, after the objects for workers
// (kube-proxy is told the endpoint cluster-info publishes).
func (m *Master) addonStep() component.Step {
	return component.Step{Do: func(ctx context.Context, r *component.Runner) error {
		s, err := m.addonSettings()
		if err != nil {
			return err
		}
		cs, err := localAdminClient(m.cfg)
		if err != nil {
			return err
		}
		store := join.NewStore(m.etcdClient, nil)
		want := version.Versions{Kubernetes: s.KubernetesVersion, Release: s.Release}
		gate := func(ctx context.Context) error { return sameVersions(ctx, store, want) }
		return r.Start(ctx, &leaseHolder{name: "add-on manager",
			run:     func(ctx context.Context) error { return addons.Run(ctx, cs, m.cfg.Name, s, gate) },
			failure: "the add-ons are not kept in step until the master restarts with valid settings"})
	}}
}

// sameVersions says which masters run another Kubernetes version or
// k8s-master release than want, nil when none does.
func sameVersions(ctx context.Context, store *join.Store, want version.Versions) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	masters, err := store.Masters(ctx)
	if err != nil {
		return fmt.Errorf("cannot list the masters' versions: %w", err)
	}
	return otherVersions(masters, want)
}

// otherVersions is sameVersions on the registered masters (one
// registered by a release that recorded no versions runs version.Legacy).
// The Kubernetes version names kube-proxy's image, the release the node
// agent's: while they differ among the masters, a change of leader would
// roll the add-ons back and forth.
func otherVersions(masters []join.MasterInfo, want version.Versions) error {
	var other []string
	for _, m := range masters {
		v := version.Legacy
		if m.Versions != nil {
			v = *m.Versions
		}
		switch {
		case v.Kubernetes != want.Kubernetes:
			other = append(other, m.Name+" runs "+v.Kubernetes)
		case v.Release != want.Release:
			other = append(other, m.Name+" runs k8s-master "+v.Release)
		}
	}
	if len(other) > 0 {
		return fmt.Errorf("the masters run different versions (%s, this one %s, k8s-master %s): the add-ons follow once every master runs these", strings.Join(other, ", "), want.Kubernetes, want.Release)
	}
	return nil
}

// addonStatus reads the add-ons through this master's apiserver and warns
// about one that runs short of ready replicas.
func (a *Admin) addonStatus(ctx context.Context, warnings []string) ([]addons.Status, []string) {
	cs, err := a.Kube()
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var st []addons.Status
		if st, err = addons.Statuses(ctx, cs); err == nil {
			n, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err == nil && len(n.Items) == 0 {
				// A cluster without workers yet: nothing to warn about.
				return st, warnings
			}
			for _, s := range st {
				if s.State == "running" && s.Ready < s.Desired {
					w := fmt.Sprintf("add-on %s: %d of %d replicas ready", s.Name, s.Ready, s.Desired)
					if s.Name == addons.NodeAgent {
						w += fmt.Sprintf(" (without a registry, each node needs the image %s: k8s-master node-agent image)", s.Image)
					}
					warnings = append(warnings, w)
				}
			}
			return st, warnings
		}
	}
	return nil, append(warnings, fmt.Sprintf("add-ons unknown: %v", err))
}
