package etcd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"google.golang.org/protobuf/proto"

	"github.com/k8s-master/k8s-master/pkg/config"
)

// ErrNoData means the data directory holds no etcd member data.
var ErrNoData = errors.New("no etcd member data")

// StoredClusterID reads the etcd cluster ID from the member's write-ahead log
// without starting the member, so a data directory holding another cluster's
// etcd data is refused before anything in it is written. Every WAL segment
// starts with a CRC record and a metadata record naming the cluster.
func StoredClusterID(c *config.Config) (string, error) {
	segments, err := filepath.Glob(filepath.Join(c.Layout().EtcdWALDir(), "*.wal"))
	if err != nil {
		return "", err
	}
	if len(segments) == 0 {
		return "", ErrNoData
	}
	sort.Strings(segments)
	f, err := os.Open(segments[0])
	if err != nil {
		return "", err
	}
	defer f.Close()
	dec := wal.NewDecoder(fileutil.NewFileReader(f))
	for range 2 {
		var rec walpb.Record
		if err := dec.Decode(&rec); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return "", fmt.Errorf("read %s: %w", segments[0], err)
		}
		// etcd 3.7's WAL records are protobuf-go messages (gogo before),
		// with optional fields read through getters; the bytes are the same.
		switch rec.GetType() {
		case wal.CrcType:
			dec.UpdateCRC(rec.GetCrc())
		case wal.MetadataType:
			var md etcdserverpb.Metadata
			if err := proto.Unmarshal(rec.GetData(), &md); err != nil {
				return "", fmt.Errorf("read %s: %w", segments[0], err)
			}
			return types.ID(md.GetClusterID()).String(), nil
		}
	}
	return "", fmt.Errorf("%s has no metadata record; the etcd data is damaged", segments[0])
}
