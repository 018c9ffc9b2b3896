package join

import (
	"slices"
	"testing"
)

// The names are the keys of Response.Files between masters of different
// releases: a renamed entry would break joining a mixed cluster.
func TestSharedFilesWireNames(t *testing.T) {
	want := []string{
		"pki/ca.crt", "pki/ca.key",
		"pki/front-proxy-ca.crt", "pki/front-proxy-ca.key",
		"pki/etcd/ca.crt", "pki/etcd/ca.key",
		"pki/sa.key", "pki/sa.pub",
		"encryption-config.yaml",
	}
	if !slices.Equal(SharedFiles, want) {
		t.Fatalf("SharedFiles = %q, want %q", SharedFiles, want)
	}
}
