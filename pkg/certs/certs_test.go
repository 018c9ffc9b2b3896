package certs

import (
	"strings"
	"testing"
	"time"

	"k8s.io/component-base/metrics"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/pki"
)

// master makes a data directory's PKI as init does, issued at now.
func master(t *testing.T, now time.Time) *config.Config {
	t.Helper()
	c := config.Default()
	c.DataDir, c.Name, c.AdvertiseAddress = t.TempDir(), "m1", "192.0.2.10"
	if err := pki.CreateClusterSecrets(&c, now); err != nil {
		t.Fatal(err)
	}
	cas, err := pki.LoadClusterCAs(&c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.EnsureLeaves(&c, cas, now); err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestCheckAndWarnings(t *testing.T) {
	issued := time.Now()
	c := master(t, issued)
	cs, err := Check(c.Layout().PKIDir(), issued)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Cert{}
	for _, x := range cs {
		byName[x.Name] = x
	}
	for _, want := range []struct {
		name string
		ca   bool
	}{{"ca.crt", true}, {"front-proxy-ca.crt", true}, {"etcd/ca.crt", true}, {"apiserver.crt", false}, {"etcd/peer.crt", false}, {"admin.crt", false}} {
		got, ok := byName[want.name]
		if !ok || got.CA != want.ca {
			t.Errorf("%s: %+v (listed %v), want CA %v", want.name, got, ok, want.ca)
		}
	}
	api := byName["apiserver.crt"]
	if api.DaysLeft < 360 || api.DaysLeft > 366 || api.Issuer == "" || !strings.Contains(api.Renewal, "90 days") {
		t.Errorf("apiserver.crt: %+v", api)
	}
	for i := 1; i < len(cs); i++ {
		if cs[i].NotAfter.Before(cs[i-1].NotAfter) {
			t.Fatalf("not soonest first: %s after %s", cs[i].Name, cs[i-1].Name)
		}
	}
	if w := Warnings(cs, issued); len(w) != 0 {
		t.Errorf("fresh certificates warn: %v", w)
	}
	// 20 days before the leaves expire: every leaf warns, no CA does.
	later := api.NotAfter.Add(-20 * 24 * time.Hour)
	cs, _ = Check(c.Layout().PKIDir(), later)
	w := Warnings(cs, later)
	leaves := 0
	for _, x := range cs {
		if !x.CA {
			leaves++
		}
	}
	if len(w) != leaves || !strings.Contains(strings.Join(w, "\n"), "certificate apiserver.crt expires in 20 days") || strings.Contains(strings.Join(w, "\n"), "ca.crt expires") {
		t.Errorf("%d leaves, warnings 20 days before expiry:\n%s", leaves, strings.Join(w, "\n"))
	}
	if w := Warnings(cs, api.NotAfter.Add(time.Hour)); !strings.Contains(strings.Join(w, "\n"), "apiserver.crt expired on") {
		t.Errorf("after expiry: %v", w)
	}
}

func TestCollector(t *testing.T) {
	c := master(t, time.Now())
	reg := metrics.NewKubeRegistry()
	reg.CustomMustRegister(NewCollector(c.Layout().PKIDir()))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	cs, _ := Check(c.Layout().PKIDir(), time.Now())
	if len(families) != 1 || families[0].GetName() != "k8s_master_certificate_expiry_timestamp_seconds" || len(families[0].GetMetric()) != len(cs) || len(cs) < 10 {
		t.Fatalf("gathered %v for %d certificates", families, len(cs))
	}
	for _, m := range families[0].GetMetric() {
		if m.GetLabel()[1].GetValue() == "apiserver.crt" || m.GetLabel()[0].GetValue() == "apiserver.crt" {
			return
		}
	}
	t.Error("no sample for apiserver.crt")
}
