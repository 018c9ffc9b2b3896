// Package etcdtest writes etcd data for tests without running etcd.
package etcdtest

import (
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// WriteMembers writes an etcd backend database at path holding the
// membership the way etcd 3.6 keeps it: bucket "members" (hex member ID →
// member JSON) and bucket "members_removed" (IDs of removed members).
func WriteMembers(t testing.TB, path string, members map[string]string, removed []string) {
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
