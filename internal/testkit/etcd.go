package testkit

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// StartEtcd runs a one-member etcd on loopback, without TLS, until the test
// ends, and returns its client URL. Short ticks make its leader elections
// quick; tune, if given, changes the configuration further (a quota, say).
func StartEtcd(t testing.TB, tune ...func(*embed.Config)) string {
	t.Helper()
	return StartEtcdCluster(t, 1, tune...)[0]
}

// StartEtcdCluster runs an n-member etcd cluster on loopback (members m1..
// mN), like StartEtcd, and returns the members' client URLs in order.
func StartEtcdCluster(t testing.TB, n int, tune ...func(*embed.Config)) []string {
	t.Helper()
	ports := FreePorts(t, 2*n)
	cfgs := make([]*embed.Config, n)
	var initial []string
	for i := range cfgs {
		cfg := embed.NewConfig()
		cfg.Dir = t.TempDir()
		if n > 1 {
			cfg.Name = fmt.Sprintf("m%d", i+1)
		}
		client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}
		peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.TickMs, cfg.ElectionMs = 50, 500
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		for _, f := range tune {
			f(cfg)
		}
		initial = append(initial, cfg.Name+"="+peer.String())
		cfgs[i] = cfg
	}
	var urls []string
	var started []*embed.Etcd
	for _, cfg := range cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		started = append(started, e)
		urls = append(urls, cfg.AdvertiseClientUrls[0].String())
	}
	for _, e := range started {
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			t.Fatal("etcd not ready")
		}
	}
	return urls
}

// WriteEtcdMembers writes an etcd backend database at path holding the
// membership the way etcd 3.6 and 3.7 keep it: bucket "members" (hex member ID →
// member JSON) and bucket "members_removed" (IDs of removed members).
func WriteEtcdMembers(t testing.TB, path string, members map[string]string, removed []string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		buckets := map[string]map[string]string{"members": members, "members_removed": {}}
		for _, id := range removed {
			buckets["members_removed"][id] = "removed"
		}
		for name, kv := range buckets {
			b, err := tx.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			for k, v := range kv {
				if err := b.Put([]byte(k), []byte(v)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
