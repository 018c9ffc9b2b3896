package secretskey

import (
	"context"
	"fmt"
	"os"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/k8s-master/k8s-master/pkg/layout"
)

// Status is the secrets-encryption state as `status` shows it.
type Status struct {
	// Primary is the key every write uses; Keys all keys, in order.
	Primary string   `json:"primary"`
	Keys    []string `json:"keys"`
	// Recorded is false while the cluster runs the configuration init
	// made and no rotation ever recorded one in etcd.
	Recorded    bool      `json:"recorded"`
	Rotation    *Rotation `json:"rotation,omitempty"`
	LastRotated string    `json:"lastRotated,omitempty"`
	// Masters is what each master reported its apiserver runs.
	Masters []MasterStatus `json:"masters,omitempty"`
}

// MasterStatus is one master's report.
type MasterStatus struct {
	Name string   `json:"name"`
	Keys []string `json:"keys"`
	// Current: it runs the desired configuration.
	Current bool `json:"current"`
}

// ReadStatus reads the desired configuration and the masters' reports;
// with none recorded it reads the local file's key names.
func ReadStatus(ctx context.Context, cli *clientv3.Client, l layout.Layout) (*Status, error) {
	d, _, _, err := readDesired(ctx, cli)
	if err != nil {
		return nil, err
	}
	if d == nil {
		b, err := os.ReadFile(l.EncryptionConfig())
		if err != nil {
			return nil, fmt.Errorf("read this master's encryption configuration: %w", err)
		}
		keys, err := Parse(b)
		if err != nil {
			return nil, err
		}
		return &Status{Primary: keys[0].Name, Keys: Names(keys)}, nil
	}
	st := &Status{Primary: d.Primary(), Keys: d.KeyNames(), Recorded: true, Rotation: d.Rotation}
	if !d.LastRotated.IsZero() {
		st.LastRotated = d.LastRotated.Format("2006-01-02T15:04:05Z")
	}
	reports, err := readLoaded(ctx, cli)
	if err != nil {
		return nil, err
	}
	// Reports of masters that left stay behind; only members count.
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the etcd members: %w", err)
	}
	members := map[string]bool{}
	for _, m := range ml.Members {
		members[m.Name] = true
	}
	for name, r := range reports {
		if !members[name] {
			continue
		}
		st.Masters = append(st.Masters, MasterStatus{Name: name, Keys: r.Keys, Current: slices.Equal(r.Keys, st.Keys)})
	}
	slices.SortFunc(st.Masters, func(a, b MasterStatus) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return st, nil
}
