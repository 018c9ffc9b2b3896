package secretskey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Prefix is where this package keeps its state in etcd.
const Prefix = "/k8s-master/secrets-encryption/"

const (
	desiredKey = Prefix + "desired"
	// LoadedPrefix holds each master's report; a restored cluster drops
	// them (its masters are new).
	LoadedPrefix = Prefix + "loaded/"
	lockPrefix   = Prefix + "lock"
)

// Loaded is a master's report of the configuration its apiserver runs.
type Loaded struct {
	Hash string    `json:"hash"`
	Keys []string  `json:"keys"`
	At   time.Time `json:"at"`
}

// errConflict: the desired configuration changed between read and write.
var errConflict = errors.New("the desired encryption configuration changed meanwhile")

// readDesired returns the desired configuration (nil when none was ever
// recorded: the cluster runs the key init made) and its mod revision, and
// the revision of the read.
func readDesired(ctx context.Context, cli *clientv3.Client) (*Desired, int64, int64, error) {
	resp, err := cli.Get(ctx, desiredKey)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read the desired encryption configuration from etcd: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, resp.Header.Revision, nil
	}
	d, err := decodeDesired(resp.Kvs[0].Value)
	return d, resp.Kvs[0].ModRevision, resp.Header.Revision, err
}

func decodeDesired(b []byte) (*Desired, error) {
	var d Desired
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("the desired encryption configuration in etcd (%s) does not parse: %w; restore the cluster from a snapshot", desiredKey, err)
	}
	if len(d.Keys) == 0 {
		return nil, fmt.Errorf("the desired encryption configuration in etcd (%s) has no key; restore the cluster from a snapshot", desiredKey)
	}
	return &d, nil
}

// writeDesired records d if the key still has modRev (0: absent).
func writeDesired(ctx context.Context, cli *clientv3.Client, d Desired, modRev int64) (int64, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return 0, err
	}
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(desiredKey), "=", modRev)).
		Then(clientv3.OpPut(desiredKey, string(b))).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("record the desired encryption configuration in etcd: %w", err)
	}
	if !resp.Succeeded {
		return 0, errConflict
	}
	return resp.Header.Revision, nil
}

func writeLoaded(ctx context.Context, cli *clientv3.Client, master string, l Loaded) error {
	b, _ := json.Marshal(l)
	if _, err := cli.Put(ctx, LoadedPrefix+master, string(b)); err != nil {
		return fmt.Errorf("report the loaded encryption configuration to etcd: %w", err)
	}
	return nil
}

func readLoaded(ctx context.Context, cli *clientv3.Client) (map[string]Loaded, error) {
	resp, err := cli.Get(ctx, LoadedPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read the masters' encryption reports from etcd: %w", err)
	}
	out := map[string]Loaded{}
	for _, kv := range resp.Kvs {
		var l Loaded
		if json.Unmarshal(kv.Value, &l) == nil {
			out[string(kv.Key[len(LoadedPrefix):])] = l
		}
	}
	return out, nil
}
