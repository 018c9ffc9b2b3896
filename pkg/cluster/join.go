package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/poll"
)

// writeSharedFiles stores the cluster's secrets: keys 0600, certificates
// and the service-account public key 0644.
func writeSharedFiles(dir string, files map[string][]byte) error {
	for _, rel := range append(append([]string{}, join.SharedFiles...), join.RotationFiles...) {
		data, ok := files[rel]
		if !ok && slices.Contains(join.RotationFiles, rel) {
			// No CA rotation under way; a file left from one goes.
			if err := os.Remove(filepath.Join(dir, rel)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			continue
		}
		if !ok {
			return fmt.Errorf("the cluster did not send %s", rel)
		}
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		mode := os.FileMode(0o600)
		if strings.HasSuffix(rel, ".crt") || strings.HasSuffix(rel, ".pub") {
			mode = 0o644
		}
		if err := fsutil.WriteFileAtomic(path, data, mode); err != nil {
			return err
		}
	}
	return nil
}

func memberID(resp *join.Response) (uint64, error) {
	return strconv.ParseUint(resp.MemberID, 16, 64)
}

// promote turns the local learner into a voter once etcd says it has
// caught up with the leader.
func promote(ctx context.Context, c *config.Config, resp *join.Response) error {
	id, err := memberID(resp)
	if err != nil {
		return err
	}
	cli, err := etcd.NewClient(c, append([]string{c.LocalEtcdURL()}, resp.EtcdEndpoints...)...)
	if err != nil {
		return err
	}
	defer cli.Close()
	var last error
	return poll.Until(ctx, 200*time.Millisecond, 5*time.Minute, func(ctx context.Context) (bool, error) {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, last = cli.MemberPromote(pctx, id)
		// A voter already (an earlier attempt got through): done.
		return last == nil || etcd.IsNotLearner(last), nil
	}, func() error { return fmt.Errorf("the learner was not promoted within 5 minutes: %w", last) })
}

// removeLearner takes back the member a failed join added.
func removeLearner(c *config.Config, resp *join.Response) error {
	id, err := memberID(resp)
	if err != nil {
		return err
	}
	if len(resp.EtcdEndpoints) == 0 {
		return errors.New("no other member to ask")
	}
	cli, err := etcd.NewClient(c, resp.EtcdEndpoints...)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = cli.MemberRemove(ctx, id)
	if etcd.IsMemberNotFound(err) {
		return nil
	}
	return err
}
