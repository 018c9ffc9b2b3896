package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/k8s-master/k8s-master/pkg/datadir"
	"github.com/k8s-master/k8s-master/pkg/poll"
)

// ErrNotRunning is returned by Dial when no master runs on the data
// directory.
var ErrNotRunning = errors.New("no master is running")

// Client talks to the master running on one data directory.
type Client struct {
	dataDir string
	socket  string
	pid     int
	hc      *http.Client
}

// Dial connects to the master running on dataDir and reads its status.
func Dial(ctx context.Context, dataDir string) (*Client, error) {
	socket := SocketPath(dataDir)
	c := &Client{
		dataDir: dataDir,
		socket:  socket,
		hc: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				name, release, err := reachable(socket)
				if err != nil {
					return nil, err
				}
				defer release()
				var d net.Dialer
				return d.DialContext(ctx, "unix", name)
			},
			DisableKeepAlives: true,
		}},
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var st Status
	if err := c.call(sctx, http.MethodGet, pathStatus, &st); err != nil {
		pid, running := datadir.Running(dataDir)
		if !running {
			return nil, fmt.Errorf("%w on %s (start it with k8s-master start --data-dir %s)", ErrNotRunning, dataDir, dataDir)
		}
		return nil, fmt.Errorf("the master at %s (pid %d) does not answer on its control socket: %w; wait until it is ready (or restart it if it predates the control socket) and try again", dataDir, pid, err)
	}
	c.pid = st.PID
	return c, nil
}

// PID is the process id of the master.
func (c *Client) PID() int { return c.pid }

// PrepareLeave tells the master that its etcd member is about to be
// removed (see Handler.PrepareLeave).
func (c *Client) PrepareLeave(ctx context.Context) error {
	if err := c.call(ctx, http.MethodPost, pathLeave, nil); err != nil {
		return fmt.Errorf("prepare the master at %s to leave: %w", c.dataDir, err)
	}
	return nil
}

// CancelLeave tells the master that its removal did not happen.
func (c *Client) CancelLeave(ctx context.Context) error {
	if err := c.call(ctx, http.MethodDelete, pathLeave, nil); err != nil {
		return fmt.Errorf("tell the master at %s it stays: %w; restart it (k8s-master start) so that it may hold the VIP again", c.dataDir, err)
	}
	return nil
}

// RenewCertificates asks the master to re-issue its leaf certificates and
// returns how many it wrote.
func (c *Client) RenewCertificates(ctx context.Context) (int, error) {
	var r Renewed
	if err := c.call(ctx, http.MethodPost, pathRenewCerts, &r); err != nil {
		return 0, fmt.Errorf("renew the certificates of the master at %s: %w", c.dataDir, err)
	}
	return r.Certificates, nil
}

// StopMaster asks the master to stop as on SIGTERM and waits, at most
// timeout, until it has released the data directory's lock. A master
// that already stopped (one whose member was removed stops by itself) is
// not an error.
func (c *Client) StopMaster(ctx context.Context, timeout time.Duration) error {
	// The request fails when the master is already on its way out (its
	// socket gone): the lock tells.
	_ = c.call(ctx, http.MethodPost, pathStop, nil)
	return poll.Until(ctx, 100*time.Millisecond, timeout, func(context.Context) (bool, error) {
		_, running := datadir.Running(c.dataDir)
		return !running, nil
	}, func() error {
		return fmt.Errorf("the master at %s (pid %d) did not stop within %s; stop it (kill %d) and try again", c.dataDir, c.pid, timeout, c.pid)
	})
}

// call makes one request; a reply other than 2xx is an error carrying the
// master's message. out, when not nil, receives the JSON reply.
func (c *Client) call(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://k8s-master"+path, http.NoBody)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// The URL's made-up host would only confuse; the dial error
		// names the socket.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e errorBody
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("%s %s: bad reply: %w", method, path, err)
		}
	}
	return nil
}
