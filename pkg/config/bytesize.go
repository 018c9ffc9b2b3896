package config

import (
	"k8s.io/apimachinery/pkg/api/resource"
)

// ByteSize is a size as the user wrote it, in Kubernetes quantity syntax
// (32Mi, 4Gi, 8589934592). It is a flag value (pflag.Value) that takes any
// text, so that a bad one is reported by Validate, naming its setting, like
// every other setting; Bytes parses it.
type ByteSize string

// The etcd backend quota: etcd's own default is 2 GiB and it warns above
// 8 GiB; below 16 MiB a cluster's own objects (RBAC, leases, events) leave
// no room to work.
const (
	DefaultEtcdQuota ByteSize = "4Gi"
	MinEtcdQuota              = 16 << 20
	MaxEtcdQuota              = 8 << 30
)

// Set stores the text as given (pflag.Value).
func (b *ByteSize) Set(s string) error { *b = ByteSize(s); return nil }

// String is the text as given (pflag.Value).
func (b *ByteSize) String() string { return string(*b) }

// Type names the value in help and file errors (pflag.Value).
func (b *ByteSize) Type() string { return "quantity" }

// Bytes parses the etcd quota; empty (a Config not made by Default, as in
// tests and admin commands) means the default. The error names the setting.
func (b ByteSize) Bytes() (int64, error) {
	s := b
	if s == "" {
		s = DefaultEtcdQuota
	}
	q, err := resource.ParseQuantity(string(s))
	if err != nil {
		return 0, &SettingError{Setting: "etcd-quota-bytes", Value: string(b), Problem: "is not a size; write it like 32Mi, 4Gi or a number of bytes"}
	}
	n, ok := q.AsInt64()
	if !ok || n < MinEtcdQuota || n > MaxEtcdQuota {
		return 0, &SettingError{Setting: "etcd-quota-bytes", Value: Bare(b), Problem: "is out of range 16Mi-8Gi"}
	}
	return n, nil
}
