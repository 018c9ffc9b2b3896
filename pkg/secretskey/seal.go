package secretskey

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// The desired configuration in etcd holds the keys sealed (AES-256-GCM)
// under a key derived from the service-account signing key, which every
// master has in its data directory and every snapshot carries: a copy of
// etcd's data alone (a raw etcd snapshot, a stolen disk image of the member
// directory) then does not hand over the key that protects the Secrets in
// it. The key name is the authenticated data, so a sealed secret cannot be
// passed off under another name.

const sealInfo = "k8s-master secrets-encryption key seal v1"

// Sealer seals and opens key secrets.
type Sealer struct{ aead cipher.AEAD }

// NewSealer derives the sealing key from the service-account key's bytes
// (pki/sa.key).
func NewSealer(saKey []byte) (*Sealer, error) {
	if len(saKey) == 0 {
		return nil, errors.New("the service-account key is empty; restore pki/sa.key from a snapshot")
	}
	k, err := hkdf.Key(sha256.New, saKey, nil, sealInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("derive the key-sealing key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// SealedKey is a Key as the desired configuration stores it.
type SealedKey struct {
	Name   string `json:"name"`
	Sealed []byte `json:"sealed"`
}

// Seal seals k.
func (s *Sealer) Seal(k Key) (SealedKey, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return SealedKey{}, err
	}
	return SealedKey{Name: k.Name, Sealed: s.aead.Seal(nonce, nonce, k.Secret, []byte(k.Name))}, nil
}

// Open opens a sealed key.
func (s *Sealer) Open(sk SealedKey) (Key, error) {
	n := s.aead.NonceSize()
	if len(sk.Sealed) < n {
		return Key{}, fmt.Errorf("sealed key %q is truncated", sk.Name)
	}
	secret, err := s.aead.Open(nil, sk.Sealed[:n], sk.Sealed[n:], []byte(sk.Name))
	if err != nil {
		return Key{}, fmt.Errorf("open sealed key %q: %w (this master's pki/sa.key differs from the cluster's; restore it from another master or a snapshot)", sk.Name, err)
	}
	return Key{Name: sk.Name, Secret: secret}, nil
}

// SealAll seals keys in order.
func (s *Sealer) SealAll(keys []Key) ([]SealedKey, error) {
	out := make([]SealedKey, 0, len(keys))
	for _, k := range keys {
		sk, err := s.Seal(k)
		if err != nil {
			return nil, err
		}
		out = append(out, sk)
	}
	return out, nil
}

// OpenAll opens keys in order.
func (s *Sealer) OpenAll(sks []SealedKey) ([]Key, error) {
	out := make([]Key, 0, len(sks))
	for _, sk := range sks {
		k, err := s.Open(sk)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}
