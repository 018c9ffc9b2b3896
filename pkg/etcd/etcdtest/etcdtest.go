// Package etcdtest writes etcd data for tests without running etcd.
//
// Deprecated: use internal/testkit, which it forwards to; it stays until
// the last importer has moved.
package etcdtest

import (
	"testing"

	"github.com/k8s-master/k8s-master/internal/testkit"
)

// WriteMembers is testkit.WriteEtcdMembers.
func WriteMembers(t testing.TB, path string, members map[string]string, removed []string) {
	t.Helper()
	testkit.WriteEtcdMembers(t, path, members, removed)
}
