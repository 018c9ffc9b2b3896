package etcdspace

import (
	"sync"

	"k8s.io/component-base/metrics"

	"github.com/k8s-master/k8s-master/pkg/process"
)

// The keeper's metrics live in the registry the apiserver serves at
// /metrics. The defragmentation ones count what this master's keeper did
// (to any member); the sizes are every member's as this master last saw
// them.
var (
	defragTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "k8s_master", Subsystem: "etcd", Name: "defrag_total",
		Help:           "Defragmentations this master's space keeper ran, by member and result (ok or failed).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"member", "result"})
	defragDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "k8s_master", Subsystem: "etcd", Name: "defrag_duration_seconds",
		Help:           "How long the defragmentations this master's space keeper ran took, by member.",
		Buckets:        []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		StabilityLevel: metrics.ALPHA,
	}, []string{"member"})
	defragInProgress = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "k8s_master", Subsystem: "etcd", Name: "defrag_in_progress",
		Help:           "1 while this master's space keeper defragments the member, else 0.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"member"})
	dbSize = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "k8s_master", Subsystem: "etcd", Name: "db_size_bytes",
		Help:           "Size of the member's backend database file.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"member"})
	dbInUse = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "k8s_master", Subsystem: "etcd", Name: "db_size_in_use_bytes",
		Help:           "Part of the member's backend database that holds data; the rest a defragmentation gives back.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"member"})
	dbQuota = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "k8s_master", Subsystem: "etcd", Name: "db_quota_bytes",
		Help:           "The member's backend quota: past it etcd raises NOSPACE and refuses writes.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"member"})
	noSpace = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "k8s_master", Subsystem: "etcd", Name: "nospace_alarm",
		Help:           "1 while etcd's NOSPACE alarm is raised (writes refused), else 0.",
		StabilityLevel: metrics.ALPHA,
	})
	registerOnce sync.Once
)

func registerMetrics() {
	registerOnce.Do(func() {
		process.RegisterMetrics(defragTotal, defragDuration, defragInProgress, dbSize, dbInUse, dbQuota, noSpace)
	})
}
