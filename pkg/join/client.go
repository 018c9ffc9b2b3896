package join

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/poll"
)

// ErrPinMismatch means the server's CA is not the one the token names: the
// secret is not sent.
var ErrPinMismatch = errors.New("the join service's CA does not match the token's CA pin")

// RefusedError is a definite "no" from the cluster (bad secret, expired,
// quorum guard, ...): retrying will not help.
type RefusedError struct {
	Endpoint string
	Status   int
	Message  string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the cluster refused the join (%s): %s", e.Endpoint, e.Message)
}

// pinnedTLS trusts exactly the CA whose public key matches pin, and only if
// the server presents it in its chain and its certificate verifies against
// it for the address dialled.
func pinnedTLS(pin, host string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The standard verification needs a root pool we do not have yet;
		// VerifyConnection below does the whole check against the pin.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: no certificate presented", ErrPinMismatch)
			}
			var ca *x509.Certificate
			var seen []string
			for _, c := range cs.PeerCertificates[1:] {
				seen = append(seen, pki.Pin(c))
				if c.IsCA && pki.Pin(c) == pin {
					ca = c
				}
			}
			if ca == nil {
				if len(seen) == 0 {
					seen = []string{"none"}
				}
				return fmt.Errorf("%w: the server presents CA %s, the token pins %s; check you used this cluster's token and address", ErrPinMismatch, strings.Join(seen, ","), pin)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("%w: the server certificate does not verify against the pinned CA for %s: %v", ErrPinMismatch, host, err)
			}
			return nil
		},
	}
}

// Request asks the cluster behind tok to admit req. It tries each endpoint,
// waits and retries while another master joins (or after back-off), and
// reports progress through note. It stops at the first definite refusal.
func Send(ctx context.Context, tok Token, req Request, note func(string)) (*Response, error) {
	req.TokenID, req.Secret = tok.ID, tok.Secret
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var resp *Response
	var lastErr error
	attempt := 0
	waitFor := 2 * time.Second
	// Requests use ctx, not the poll's context: one in flight when the 10
	// minutes pass may be admitting this master and is let finish.
	err = poll.UntilDelay(ctx, func() time.Duration { return waitFor }, 10*time.Minute, func(context.Context) (bool, error) {
		waitFor = 2 * time.Second
		for _, ep := range tok.Endpoints {
			r, retry, err := post(ctx, ep, tok.CAPin, body)
			if err == nil {
				resp = r
				return true, nil
			}
			var refused *RefusedError
			if errors.Is(err, ErrPinMismatch) || errors.As(err, &refused) {
				return false, err
			}
			lastErr = err
			if retry > 0 {
				waitFor = retry
				note(err.Error())
				break // the cluster answered: wait, then ask again
			}
		}
		if attempt >= 2 && lastErr != nil && !isRetryLater(lastErr) {
			return false, fmt.Errorf("no join endpoint answered (%s): %w", strings.Join(tok.Endpoints, ", "), lastErr)
		}
		attempt++
		return false, nil
	}, func() error { return fmt.Errorf("gave up joining after 10 minutes: %w", lastErr) })
	if err != nil {
		return nil, err
	}
	return resp, nil
}

type retryLater struct{ msg string }

func (r retryLater) Error() string { return r.msg }

func isRetryLater(err error) bool {
	var r retryLater
	return errors.As(err, &r)
}

func post(ctx context.Context, endpoint, pin string, body []byte) (*Response, time.Duration, error) {
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		return nil, 0, err
	}
	client := &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{TLSClientConfig: pinnedTLS(pin, host), DisableKeepAlives: true},
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+endpoint+Path, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		if errors.Is(err, ErrPinMismatch) {
			return nil, 0, fmt.Errorf("%s: %w", endpoint, unwrapPin(err))
		}
		return nil, 0, fmt.Errorf("%s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode == http.StatusOK {
		var out Response
		if err := json.Unmarshal(data, &out); err != nil {
			return nil, 0, fmt.Errorf("%s: bad answer: %w", endpoint, err)
		}
		if out.CAPin != pin {
			return nil, 0, fmt.Errorf("%w: the cluster reports CA %s", ErrPinMismatch, out.CAPin)
		}
		return &out, 0, nil
	}
	var e ErrorResponse
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(data))
	}
	switch resp.StatusCode {
	case http.StatusConflict, http.StatusTooManyRequests, http.StatusServiceUnavailable:
		if e.RetryAfterSeconds > 0 {
			return nil, time.Duration(e.RetryAfterSeconds) * time.Second, retryLater{fmt.Sprintf("%s: %s", endpoint, e.Error)}
		}
	}
	if resp.StatusCode >= 500 {
		return nil, 0, fmt.Errorf("%s: %s (%s)", endpoint, e.Error, resp.Status)
	}
	return nil, 0, &RefusedError{Endpoint: endpoint, Status: resp.StatusCode, Message: e.Error}
}

// unwrapPin keeps the pin error's own words without url.Error's prefix.
func unwrapPin(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if strings.HasPrefix(e.Error(), ErrPinMismatch.Error()) {
			return e
		}
	}
	return err
}
