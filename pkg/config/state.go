package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/k8s-master/k8s-master/pkg/fsutil"
)

// StateVersion is bumped when the layout of the data directory changes.
const StateVersion = 1

// State is what init records in DIR/state.json once the cluster exists: the
// identity later starts check against, and the settings they reuse.
type State struct {
	Version   int       `json:"version"`
	ClusterID string    `json:"clusterID"`
	CreatedAt time.Time `json:"createdAt"`
	// CAPin is "sha256:<hex>" of the cluster CA's public key.
	CAPin string `json:"caPin"`
	// EtcdClusterID is the etcd cluster ID (hex) the local member belongs to.
	EtcdClusterID string `json:"etcdClusterID"`
	Config        Config `json:"config"`
}

// ErrNoState means the data directory holds no initialised master.
var ErrNoState = errors.New("no k8s-master state")

// ReadState loads DIR/state.json; ErrNoState when it is absent.
func ReadState(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoState
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s is corrupt (%v); restore it from a backup or re-create this master", path, err)
	}
	if s.Version != StateVersion {
		return nil, fmt.Errorf("%s has layout version %d but this binary handles %d; use a matching k8s-master release", path, s.Version, StateVersion)
	}
	if s.ClusterID == "" || s.CAPin == "" {
		return nil, fmt.Errorf("%s lacks the cluster identity; restore it from a backup", path)
	}
	return &s, nil
}

// WriteState records s atomically (0600: it names the cluster's identity).
func WriteState(path string, s *State) error {
	s.Version = StateVersion
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, append(data, '\n'), 0o600)
}
