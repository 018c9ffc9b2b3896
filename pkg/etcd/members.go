package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/k8s-master/k8s-master/pkg/config"
)

// ErrNotRunning means no etcd member answers on the data directory's
// client port.
var ErrNotRunning = errors.New("local etcd member not running")

// MemberInfo is one member of the etcd cluster.
type MemberInfo struct {
	ID         uint64
	Name       string
	IsLearner  bool
	ClientURLs []string
}

// LiveMembers asks the running local member (the client port recorded in c)
// for the member list, with the apiserver's etcd client certificate.
// ErrNotRunning when nothing answers within timeout.
func LiveMembers(ctx context.Context, c *config.Config, timeout time.Duration) ([]MemberInfo, error) {
	tlsCfg, err := ClientTLSConfig(c)
	if err != nil {
		return nil, fmt.Errorf("etcd client credentials in %s: %w", c.Layout().PKIDir(), err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{c.LocalEtcdURL()},
		TLS:         tlsCfg,
		DialTimeout: timeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ErrNotRunning
		}
		return nil, err
	}
	var out []MemberInfo
	for _, m := range resp.Members {
		out = append(out, MemberInfo{ID: m.ID, Name: m.Name, IsLearner: m.IsLearner, ClientURLs: m.ClientURLs})
	}
	sortMembers(out)
	return out, nil
}

// StoredMembers reads the member list from a stopped member's backend
// (DATA_DIR/etcd/member/snap/db) without starting it.
func StoredMembers(c *config.Config) ([]MemberInfo, error) {
	path := c.Layout().EtcdBackend()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%s is in use: a k8s-master process still runs this data directory", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read etcd membership: %w", err)
	}
	defer db.Close()
	var out []MemberInfo
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("members"))
		if b == nil {
			return fmt.Errorf("%s holds no etcd membership", path)
		}
		removed := tx.Bucket([]byte("members_removed"))
		return b.ForEach(func(k, v []byte) error {
			if removed != nil && removed.Get(k) != nil {
				return nil
			}
			var m struct {
				ID         uint64   `json:"id"`
				Name       string   `json:"name"`
				IsLearner  bool     `json:"isLearner"`
				ClientURLs []string `json:"clientURLs"`
			}
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("etcd member %s in %s: %w", k, path, err)
			}
			out = append(out, MemberInfo{ID: m.ID, Name: m.Name, IsLearner: m.IsLearner, ClientURLs: m.ClientURLs})
			return nil
		})
	})
	sortMembers(out)
	return out, err
}

func sortMembers(ms []MemberInfo) {
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
}
