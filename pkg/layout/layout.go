// Package layout names every path under a master's data directory. Each
// entry is spelled here once; every other package asks a Layout instead of
// joining names itself, so that moving or adding an entry is one edit and
// the lists of what init writes and what reset removes cannot drift apart.
//
// It imports only the standard library so that any package may use it.
package layout

import (
	"path/filepath"
	"strings"
)

// Names of the entries at the top of the data directory.
const (
	pkiDir               = "pki"
	etcdDir              = "etcd"
	stateFile            = "state.json"
	versionsFile         = "versions.json"
	tokenFile            = "token"
	adminKubeconfig      = "admin.kubeconfig"
	cmKubeconfig         = "controller-manager.kubeconfig"
	schedulerKubeconfig  = "scheduler.kubeconfig"
	encryptionConfig     = "encryption-config.yaml"
	authenticationConfig = "authentication-config.yaml"
	initMarker           = ".init-incomplete"
	lockFile             = ".lock"
	controlSocket        = "control.sock"
	etcdSocket           = "etcd.sock"
	logFile              = "k8s-master.log"
	writeProbePrefix     = ".write-test-"
)

// Layout is one data directory. The zero Layout (empty Root) gives the
// paths relative to the data directory, as the join protocol names files.
type Layout struct {
	Root string
}

func (l Layout) path(name ...string) string {
	return filepath.Join(append([]string{l.Root}, name...)...)
}

// PKIDir holds the cluster and front-proxy CAs, the service-account keys
// and this master's leaf certificates (kubeadm's layout).
func (l Layout) PKIDir() string { return l.path(pkiDir) }

// EtcdPKIDir holds the etcd CA and this member's server and peer
// certificates.
func (l Layout) EtcdPKIDir() string { return l.path(pkiDir, "etcd") }

// APIServerCertDir is kube-apiserver's --cert-dir (certificates it makes
// itself when asked to).
func (l Layout) APIServerCertDir() string { return l.path(pkiDir, "apiserver-generated") }

// EtcdDir is the etcd member's data directory.
func (l Layout) EtcdDir() string { return l.path(etcdDir) }

// EtcdWALDir and EtcdBackend are etcd's own files inside EtcdDir (its
// layout, not ours), read without starting the member to tell whether it
// has data and which cluster and members it belongs to.
func (l Layout) EtcdWALDir() string  { return l.path(etcdDir, "member", "wal") }
func (l Layout) EtcdBackend() string { return l.path(etcdDir, "member", "snap", "db") }

// State is the cluster's identity and recorded settings (config.State).
func (l Layout) State() string { return l.path(stateFile) }

// Versions is what the master last ran on this data directory (the
// upgrade checks' "before").
func (l Layout) Versions() string { return l.path(versionsFile) }

// Token is the join token init prints, kept for the operator.
func (l Layout) Token() string { return l.path(tokenFile) }

// AdminKubeconfig is the cluster-admin kubeconfig for the operator.
func (l Layout) AdminKubeconfig() string { return l.path(adminKubeconfig) }

// ControllerManagerKubeconfig is the in-process controller-manager's.
func (l Layout) ControllerManagerKubeconfig() string { return l.path(cmKubeconfig) }

// SchedulerKubeconfig is the in-process scheduler's.
func (l Layout) SchedulerKubeconfig() string { return l.path(schedulerKubeconfig) }

// EncryptionConfig is kube-apiserver's --encryption-provider-config: the
// secrets-encryption key every master shares.
func (l Layout) EncryptionConfig() string { return l.path(encryptionConfig) }

// AuthenticationConfig is kube-apiserver's --authentication-config.
func (l Layout) AuthenticationConfig() string { return l.path(authenticationConfig) }

// InitMarker exists while init writes a new cluster.
func (l Layout) InitMarker() string { return l.path(initMarker) }

// Lock is flock'ed by the master running on the directory and holds its pid.
func (l Layout) Lock() string { return l.path(lockFile) }

// ControlSocket is where the running master listens for local commands.
func (l Layout) ControlSocket() string { return l.path(controlSocket) }

// EtcdSocket is where the local etcd member serves this process's
// apiserver: plain gRPC on a socket only root reaches, so that the
// apiserver's storage client holds no etcd CA (it could not reload one)
// and pays no TLS.
func (l Layout) EtcdSocket() string { return l.path(etcdSocket) }

// Log is the default log file (--log-file).
func (l Layout) Log() string { return l.path(logFile) }

// WriteProbePattern is the os.CreateTemp pattern of the files preflight
// writes into the data directory to see that it is writable.
const WriteProbePattern = writeProbePrefix + "*"

// InitEntries are the names init may write at the top of the data
// directory (the marker included): an interrupted init may be cleared by
// removing exactly these, and reset removes them.
func InitEntries() []string {
	return []string{
		pkiDir, etcdDir, stateFile, adminKubeconfig, cmKubeconfig,
		schedulerKubeconfig, encryptionConfig, authenticationConfig, initMarker,
		tokenFile, versionsFile,
	}
}

// IsRuntime tells entries that a master makes while it runs or starts (the
// lock, the control and etcd sockets, logs, write probes, a half-written state file)
// from state: finding one says nothing about whether a cluster exists.
func IsRuntime(name string) bool {
	return name == lockFile || name == controlSocket || name == etcdSocket || IsLog(name) ||
		strings.HasPrefix(name, writeProbePrefix) ||
		strings.HasPrefix(name, "."+stateFile+".tmp") || strings.HasPrefix(name, "."+versionsFile+".tmp")
}

// IsLog tells the log file and its rotations (k8s-master-<time>.log.gz,
// k8s-master.log.1, ...) apart from state.
func IsLog(name string) bool {
	stem := strings.TrimSuffix(logFile, ".log")
	return strings.HasPrefix(name, stem) && (strings.HasSuffix(name, ".log") || strings.Contains(name, ".log.") || strings.HasSuffix(name, ".log.gz") || strings.Contains(name, ".log-"))
}
