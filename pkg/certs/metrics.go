package certs

import (
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var expiryDesc = metrics.NewDesc("k8s_master_certificate_expiry_timestamp_seconds",
	"Unix time at which each of this master's certificates expires, by file under the PKI directory.",
	[]string{"certificate", "ca"}, nil, metrics.ALPHA, "")

// Collector exports each certificate's expiry, read from the PKI
// directory at every scrape (so a renewed file shows at once).
type Collector struct {
	metrics.BaseStableCollector
	dir string
}

// NewCollector exports the certificates under pkiDir.
func NewCollector(pkiDir string) *Collector { return &Collector{dir: pkiDir} }

func (c *Collector) DescribeWithStability(ch chan<- *metrics.Desc) { ch <- expiryDesc }

func (c *Collector) CollectWithStability(ch chan<- metrics.Metric) {
	certs, err := Check(c.dir, time.Now())
	if err != nil {
		return
	}
	for _, cert := range certs {
		ca := "false"
		if cert.CA {
			ca = "true"
		}
		ch <- metrics.NewLazyConstMetric(expiryDesc, metrics.GaugeValue, float64(cert.NotAfter.Unix()), cert.Name, ca)
	}
}

var (
	exported     atomic.Pointer[string]
	registerOnce sync.Once
)

// Export puts the expiry of the certificates under pkiDir on the process's
// /metrics (the registry the apiserver serves); a later call moves it to
// another directory (one master per process, but tests start several).
func Export(pkiDir string) {
	exported.Store(&pkiDir)
	registerOnce.Do(func() { legacyregistry.CustomMustRegister(&exportedCollector{}) })
}

// exportedCollector collects the directory Export was last given.
type exportedCollector struct{ metrics.BaseStableCollector }

func (c *exportedCollector) DescribeWithStability(ch chan<- *metrics.Desc) { ch <- expiryDesc }

func (c *exportedCollector) CollectWithStability(ch chan<- metrics.Metric) {
	if dir := exported.Load(); dir != nil {
		NewCollector(*dir).CollectWithStability(ch)
	}
}
