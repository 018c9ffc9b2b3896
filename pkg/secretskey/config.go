// Package secretskey owns the secrets-encryption key of a cluster: the
// kube-apiserver EncryptionConfiguration every master runs with, the
// desired configuration kept in etcd, the component that applies it on each
// master (Applier), and the cluster-wide rotation (`secrets rotate-key`,
// Rotator) that moves every stored object to a new key without a moment in
// which any master lacks a key that still encrypts something.
//
// State in etcd, under Prefix:
//
//	desired        the configuration every master must run: the keys in
//	               provider order (the first encrypts new writes), sealed,
//	               and the rotation under way with its phase
//	loaded/<name>  what master <name>'s apiserver has loaded (a hash of
//	               the rendered file), written by its Applier
//	lock           held by the one rotate-key that may run
package secretskey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// Key is one secretbox key of the configuration.
type Key struct {
	Name   string
	Secret []byte // 32 bytes
}

// Resources are what the configuration encrypts, each with the etcd prefix
// the apiserver stores it under (its default --etcd-prefix, /registry):
// the rewrite of a rotation walks these prefixes.
var Resources = []Resource{{Name: "secrets", Prefix: "/registry/secrets/"}}

// Resource is an encrypted resource and where its objects live in etcd.
type Resource struct {
	Name   string
	Prefix string
}

// Provider is the envelope prefix of values stored with the named key by
// the apiserver's secretbox transformer ("k8s:enc:secretbox:v1:NAME:").
func Provider(name string) string { return "k8s:enc:secretbox:v1:" + name + ":" }

// NewKey makes a fresh random key named after the highest keyN among
// existing (key1 at init, then key2, ...).
func NewKey(existing []string) (Key, error) {
	n := 0
	for _, name := range existing {
		if v, err := strconv.Atoi(strings.TrimPrefix(name, "key")); err == nil && strings.HasPrefix(name, "key") && v > n {
			n = v
		}
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return Key{}, fmt.Errorf("read random bytes for a new key: %w", err)
	}
	return Key{Name: "key" + strconv.Itoa(n+1), Secret: secret}, nil
}

// Render is the EncryptionConfiguration for keys in provider order: the
// first key encrypts every write, all of them decrypt, and identity last
// keeps objects written before encryption was on readable (a rotation's
// rewrite encrypts them too). The same keys always render the same bytes,
// so masters compare configurations by hash.
func Render(keys []Key) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n")
	b.WriteString("# Written by k8s-master from the cluster's desired configuration in etcd;\n")
	b.WriteString("# change it with k8s-master secrets rotate-key, not by hand.\n")
	b.WriteString("resources:\n- resources: [")
	for i, r := range Resources {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.Name)
	}
	b.WriteString("]\n  providers:\n  - secretbox:\n      keys:\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "      - name: %s\n        secret: %s\n", k.Name, base64.StdEncoding.EncodeToString(k.Secret))
	}
	b.WriteString("  - identity: {}\n")
	return []byte(b.String())
}

// Hash identifies a rendered configuration in the masters' reports.
func Hash(rendered []byte) string {
	s := sha256.Sum256(rendered)
	return hex.EncodeToString(s[:])
}

// fileDoc is the part of an EncryptionConfiguration this package reads.
type fileDoc struct {
	Kind      string `json:"kind"`
	Resources []struct {
		Resources []string `json:"resources"`
		Providers []struct {
			Secretbox *struct {
				Keys []struct {
					Name   string `json:"name"`
					Secret string `json:"secret"`
				} `json:"keys"`
			} `json:"secretbox,omitempty"`
			Identity *struct{} `json:"identity,omitempty"`
		} `json:"providers"`
	} `json:"resources"`
}

// Parse reads the keys of a configuration this package (or init) wrote:
// one resource list, secretbox keys then identity. Anything else is not
// ours to rotate.
func Parse(data []byte) ([]Key, error) {
	var d fileDoc
	if err := yaml.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("parse the encryption configuration: %w", err)
	}
	if d.Kind != "EncryptionConfiguration" || len(d.Resources) != 1 {
		return nil, fmt.Errorf("the encryption configuration is not one k8s-master wrote (kind %q, %d resource lists); restore it from a snapshot", d.Kind, len(d.Resources))
	}
	var keys []Key
	for _, p := range d.Resources[0].Providers {
		switch {
		case p.Secretbox != nil:
			for _, k := range p.Secretbox.Keys {
				secret, err := base64.StdEncoding.DecodeString(k.Secret)
				if err != nil || len(secret) != 32 {
					return nil, fmt.Errorf("secretbox key %q is not 32 base64-encoded bytes; restore the configuration from a snapshot", k.Name)
				}
				keys = append(keys, Key{Name: k.Name, Secret: secret})
			}
		case p.Identity != nil:
		default:
			return nil, fmt.Errorf("the encryption configuration has a provider other than secretbox and identity; k8s-master rotates only its own secretbox keys")
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("the encryption configuration has no secretbox key; restore it from a snapshot")
	}
	return keys, nil
}

// Names are the keys' names in order.
func Names(keys []Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Name
	}
	return out
}

func hasKey(keys []Key, name string) bool {
	return slices.ContainsFunc(keys, func(k Key) bool { return k.Name == name })
}
