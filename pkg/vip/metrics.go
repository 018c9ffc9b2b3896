package vip

import (
	"sync"

	"k8s.io/component-base/metrics"

	"github.com/k8s-master/k8s-master/pkg/process"
)

// The VIP's metrics live in the registry the apiserver serves at /metrics.
var (
	holderGauge = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "k8s_master", Subsystem: "vip", Name: "holder",
		Help:           "1 while this master holds the VIP, else 0.",
		StabilityLevel: metrics.ALPHA,
	})
	transitions = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "k8s_master", Subsystem: "vip", Name: "transitions_total",
		Help:           "Times this master took or gave up the VIP.",
		StabilityLevel: metrics.ALPHA,
	})
	lastTakeover = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "k8s_master", Subsystem: "vip", Name: "last_takeover_seconds",
		Help:           "Seconds from this master noticing the VIP was free (or its holder dead) to holding and announcing it, at its last takeover.",
		StabilityLevel: metrics.ALPHA,
	})
	handOffFrames = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "k8s_master", Subsystem: "vip", Name: "handoff_frames_total",
		Help:           "Frames for the VIP that reached this master after it gave the VIP up, by result: forwarded to the next holder or dropped.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	registerOnce sync.Once
)

func registerMetrics() {
	registerOnce.Do(func() {
		process.RegisterMetrics(holderGauge, transitions, lastTakeover, handOffFrames)
	})
}
