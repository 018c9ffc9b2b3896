package etcd

import (
	"fmt"
	"os"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/k8s-master/k8s-master/pkg/config"
)

// RestoreRevisionBump is how far a restored member's revision jumps ahead
// of the snapshot's. Kubernetes clients hold resourceVersions (etcd
// revisions) from before the disaster; a jump of a billion, marked
// compacted, makes every one of them "too old" (410 Gone), so watchers
// re-list instead of silently missing what happened after the snapshot,
// and no new revision can ever equal an old one that meant something else.
const RestoreRevisionBump = 1_000_000_000

// Restore writes this master's etcd data directory from a snapshot file
// (etcd's snapshot API format): a new one-member cluster of this master,
// with new member and cluster IDs (derived from token, which must be
// unique), every key of the snapshot, and the revision bumped and
// compacted. It returns the new etcd cluster ID. The data directory's etcd
// directory must not exist yet.
func Restore(c *config.Config, db, token string, lg *zap.Logger) (string, error) {
	dir := c.Layout().EtcdDir()
	if _, err := os.Stat(dir); err == nil {
		return "", fmt.Errorf("%s already exists; restore needs an empty data directory", dir)
	}
	if lg == nil {
		lg = zap.NewNop()
	}
	peer := c.EtcdPeerURL()
	err := snapshot.NewV3(lg).Restore(snapshot.RestoreConfig{
		SnapshotPath:        db,
		Name:                c.Name,
		OutputDataDir:       dir,
		PeerURLs:            []string{peer},
		InitialCluster:      c.Name + "=" + peer,
		InitialClusterToken: token,
		RevisionBump:        RestoreRevisionBump,
		MarkCompacted:       true,
	})
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("restore etcd from the snapshot: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", err
	}
	return StoredClusterID(c)
}
