package join

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/version"
)

// Keys in etcd, outside the apiserver's /registry prefix.
const (
	tokenKeyPrefix  = "/k8s-master/join-tokens/"
	masterKeyPrefix = "/k8s-master/masters/"
	// keepAfterExpiry keeps an expired or revoked token's record so a
	// joiner is told why it was refused; etcd deletes it after that.
	keepAfterExpiry = 24 * time.Hour
)

// Record is what the cluster keeps of a token: never the secret.
type Record struct {
	ID          string    `json:"id"`
	SecretHash  string    `json:"secretHash"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires"`
	// UsageLimit is how many joins it allows; 0 means no limit.
	UsageLimit int  `json:"usageLimit,omitempty"`
	Uses       int  `json:"uses"`
	Revoked    bool `json:"revoked,omitempty"`
}

// State says whether a record can be used now.
func (r Record) State(now time.Time) string {
	switch {
	case r.Revoked:
		return "revoked"
	case !now.Before(r.Expires):
		return "expired"
	case r.UsageLimit > 0 && r.Uses >= r.UsageLimit:
		return "used up"
	}
	return "valid"
}

// Token errors, each a clear refusal.
var (
	ErrUnknownToken = errors.New("unknown join token: it was never created in this cluster, or it expired more than a day ago")
	ErrBadSecret    = errors.New("wrong join token secret")
	ErrExpired      = errors.New("join token expired; create a new one on a master with: k8s-master token create")
	ErrRevoked      = errors.New("join token revoked; create a new one on a master with: k8s-master token create")
	ErrUsedUp       = errors.New("join token has no uses left; create a new one on a master with: k8s-master token create")
)

// Store keeps tokens and the masters registry in etcd.
type Store struct {
	cli *clientv3.Client
	now func() time.Time
}

// NewStore uses cli; now is the clock (time.Now when nil).
func NewStore(cli *clientv3.Client, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{cli: cli, now: now}
}

// CreateToken records a new token valid for ttl and returns it.
func (s *Store) CreateToken(ctx context.Context, endpoints []string, caPin string, ttl time.Duration, usageLimit int, description string) (Token, Record, error) {
	if ttl <= 0 {
		return Token{}, Record{}, &config.SettingError{Setting: "ttl", Problem: fmt.Sprintf("must be positive, got %s", ttl)}
	}
	if usageLimit < 0 {
		return Token{}, Record{}, &config.SettingError{Setting: "usages", Problem: fmt.Sprintf("must be 0 (no limit) or more, got %d", usageLimit)}
	}
	if len(endpoints) == 0 {
		return Token{}, Record{}, errors.New("no join endpoints are registered yet; is a master running?")
	}
	tok, err := NewToken(endpoints, caPin)
	if err != nil {
		return Token{}, Record{}, err
	}
	now := s.now().UTC()
	rec := Record{ID: tok.ID, SecretHash: HashSecret(tok.ID, tok.Secret), Description: description, Created: now, Expires: now.Add(ttl), UsageLimit: usageLimit}
	data, err := json.Marshal(rec)
	if err != nil {
		return Token{}, Record{}, err
	}
	lease, err := s.cli.Grant(ctx, int64((ttl+keepAfterExpiry)/time.Second))
	if err != nil {
		return Token{}, Record{}, fmt.Errorf("store join token: %w", err)
	}
	key := tokenKeyPrefix + tok.ID
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(data), clientv3.WithLease(lease.ID))).
		Commit()
	if err != nil {
		return Token{}, Record{}, fmt.Errorf("store join token: %w", err)
	}
	if !resp.Succeeded {
		return Token{}, Record{}, errors.New("token ID collision; try again")
	}
	return tok, rec, nil
}

func (s *Store) get(ctx context.Context, id string) (Record, int64, error) {
	resp, err := s.cli.Get(ctx, tokenKeyPrefix+id)
	if err != nil {
		return Record{}, 0, err
	}
	if len(resp.Kvs) == 0 {
		return Record{}, 0, ErrUnknownToken
	}
	var r Record
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return Record{}, 0, fmt.Errorf("token %s is stored damaged: %w", id, err)
	}
	return r, resp.Kvs[0].ModRevision, nil
}

// Check authenticates id and secret and returns the record if the token may
// be used now. It does not count a use: see Consume.
func (s *Store) Check(ctx context.Context, id, secret string) (Record, error) {
	r, _, err := s.get(ctx, id)
	if err != nil {
		return Record{}, err
	}
	if subtle.ConstantTimeCompare([]byte(HashSecret(id, secret)), []byte(r.SecretHash)) != 1 {
		return Record{}, ErrBadSecret
	}
	switch r.State(s.now()) {
	case "revoked":
		return Record{}, ErrRevoked
	case "expired":
		return Record{}, ErrExpired
	case "used up":
		return Record{}, ErrUsedUp
	}
	return r, nil
}

// Consume counts one use of a token Check accepted.
func (s *Store) Consume(ctx context.Context, id string) error {
	return s.update(ctx, id, func(r *Record) { r.Uses++ })
}

// update changes a token record with compare-and-swap, keeping its lease.
func (s *Store) update(ctx context.Context, id string, change func(*Record)) error {
	for range 5 {
		r, rev, err := s.get(ctx, id)
		if err != nil {
			return err
		}
		change(&r)
		data, err := json.Marshal(r)
		if err != nil {
			return err
		}
		key := tokenKeyPrefix + id
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(data), clientv3.WithIgnoreLease())).
			Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			return nil
		}
	}
	return errors.New("token record keeps changing; try again")
}

// ListTokens returns every token record, newest first.
func (s *Store) ListTokens(ctx context.Context) ([]Record, error) {
	resp, err := s.cli.Get(ctx, tokenKeyPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, kv := range resp.Kvs {
		var r Record
		if json.Unmarshal(kv.Value, &r) == nil {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// RevokeToken marks a token revoked (kept a day so joiners learn why).
func (s *Store) RevokeToken(ctx context.Context, id string) error {
	return s.update(ctx, id, func(r *Record) { r.Revoked = true })
}

// MasterInfo is how a master can be reached; each master registers itself
// at start.
type MasterInfo struct {
	Name             string `json:"name"`
	AdvertiseAddress string `json:"advertiseAddress"`
	APIServerPort    int    `json:"apiServerPort"`
	JoinPort         int    `json:"joinPort"`
	// Versions is what the master runs (absent: a release before v0.2.0,
	// see version.Legacy).
	Versions *version.Versions `json:"versions,omitempty"`
}

// RegisterMaster records m under its name.
func (s *Store) RegisterMaster(ctx context.Context, m MasterInfo) error {
	data, _ := json.Marshal(m)
	_, err := s.cli.Put(ctx, masterKeyPrefix+m.Name, string(data))
	return err
}

// UnregisterMaster removes a master that left or was removed.
func (s *Store) UnregisterMaster(ctx context.Context, name string) error {
	_, err := s.cli.Delete(ctx, masterKeyPrefix+name)
	return err
}

// Masters lists registered masters by name.
func (s *Store) Masters(ctx context.Context) ([]MasterInfo, error) {
	return s.masters(ctx)
}

// MastersAsSeen lists registered masters as the member the client talks
// to has them (a serializable read): it needs no quorum, so a master can
// look before its own member is back.
func (s *Store) MastersAsSeen(ctx context.Context) ([]MasterInfo, error) {
	return s.masters(ctx, clientv3.WithSerializable())
}

func (s *Store) masters(ctx context.Context, opts ...clientv3.OpOption) ([]MasterInfo, error) {
	opts = append(opts, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	resp, err := s.cli.Get(ctx, masterKeyPrefix, opts...)
	if err != nil {
		return nil, err
	}
	var out []MasterInfo
	for _, kv := range resp.Kvs {
		var m MasterInfo
		if json.Unmarshal(kv.Value, &m) == nil {
			out = append(out, m)
		}
	}
	return out, nil
}
