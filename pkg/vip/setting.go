package vip

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SettingKey holds the cluster's VIP once `vip set` gave a running cluster
// one (or moved it). Every master watches it and, when it changes, adds
// the address to its certificates, kubeconfig and state and runs the
// election for it; joiners are handed it. Without the key, the VIP is the
// one init recorded (or none).
const SettingKey = "/k8s-master/vip/setting"

// appliedPrefix holds, per master, the VIP address it last applied:
// `vip set` waits until every master has.
const appliedPrefix = "/k8s-master/vip/applied/"

// Setting is the cluster-wide VIP as `vip set` recorded it.
type Setting struct {
	Address  string `json:"address"`
	LeaseTTL int    `json:"leaseTTL"`
	// Interface is the one named with --iface; a master where it does
	// not exist or does not hold the VIP's subnet finds its own.
	Interface string    `json:"interface,omitempty"`
	SetAt     time.Time `json:"setAt"`
}

// ReadSetting returns the recorded setting (nil when none) and the
// revision it was read at.
func ReadSetting(ctx context.Context, cli *clientv3.Client) (*Setting, int64, error) {
	resp, err := cli.Get(ctx, SettingKey)
	if err != nil {
		return nil, 0, fmt.Errorf("read the VIP setting: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, nil
	}
	s, err := ParseSetting(resp.Kvs[0].Value)
	return s, resp.Header.Revision, err
}

// ParseSetting decodes the key's value.
func ParseSetting(b []byte) (*Setting, error) {
	var s Setting
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("the VIP setting in etcd is corrupt (%w); run k8s-master vip set again", err)
	}
	return &s, nil
}

// WriteSetting records s for every master.
func WriteSetting(ctx context.Context, cli *clientv3.Client, s Setting) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if _, err := cli.Put(ctx, SettingKey, string(b)); err != nil {
		return fmt.Errorf("record the VIP setting: %w", err)
	}
	return nil
}

// MarkApplied records that master name now runs with address.
func MarkApplied(ctx context.Context, cli *clientv3.Client, name, address string) error {
	_, err := cli.Put(ctx, appliedPrefix+name, address)
	return err
}

// Applied returns the address each master last applied, by name.
func Applied(ctx context.Context, cli *clientv3.Client) (map[string]string, error) {
	resp, err := cli.Get(ctx, appliedPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)[len(appliedPrefix):]] = string(kv.Value)
	}
	return out, nil
}
