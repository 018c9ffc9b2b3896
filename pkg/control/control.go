// Package control is the one channel between the other k8s-master commands
// on a host (leave, reset) and the master running on a data directory: a
// unix socket at DATA_DIR/control.sock, mode 0600 (root only), speaking
// HTTP/1.1 with JSON bodies. The running master serves it (Server, a
// component of pkg/component); commands reach it with Dial.
//
// Protocol (docs/control.md):
//
//	GET    /v1/status  200 {"pid": N}: the master's process id
//	POST   /v1/leave   200 {}: the master is about to be removed from the
//	                   cluster: it steps down from the VIP and treats its
//	                   etcd member's removal as a clean stop
//	DELETE /v1/leave   200 {}: the removal did not happen; carry on as before
//	POST   /v1/stop    202 {}: stop gracefully, exactly as on SIGTERM
//
// A request that fails answers with a 4xx or 5xx status and
// {"error": "..."}. The socket's mode is the access control: whoever may
// connect may stop the master.
package control

import (
	"github.com/k8s-master/k8s-master/pkg/layout"
)

// SocketPath is where the master of dataDir serves its control socket.
func SocketPath(dataDir string) string {
	return layout.Layout{Root: dataDir}.ControlSocket()
}

// Status is what GET /v1/status answers.
type Status struct {
	// PID is the master's process id (for messages that tell an operator
	// what to kill when it does not stop).
	PID int `json:"pid"`
}

// errorBody is the body of every failed request.
type errorBody struct {
	Error string `json:"error"`
}

const (
	pathStatus = "/v1/status"
	pathLeave  = "/v1/leave"
	pathStop   = "/v1/stop"
	// pathRenewCerts re-issues the master's leaf certificates.
	pathRenewCerts = "/v1/renew-certificates"
)

// Renewed is the reply to a certificate renewal.
type Renewed struct {
	Certificates int `json:"certificates"`
}
