package addons

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Status is one add-on as `k8s-master status` shows it.
type Status struct {
	Name string `json:"name"`
	// State is "running" (the workload exists), "disabled" (the manager
	// was told not to run it) or "absent" (not applied yet, or deleted).
	State string `json:"state"`
	// Kind and Image of the workload, when it exists.
	Kind  string `json:"kind,omitempty"`
	Image string `json:"image,omitempty"`
	// Desired and Ready replicas (for the DaemonSet: the nodes it should
	// run on, and those where it is ready).
	Desired int32 `json:"desired"`
	Ready   int32 `json:"ready"`
}

// Statuses reads each add-on's workload.
func Statuses(ctx context.Context, cs kubernetes.Interface) ([]Status, error) {
	ns := metav1.NamespaceSystem
	var disabled []string
	state, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, StateConfigMap, metav1.GetOptions{})
	switch {
	case err == nil:
		if d := state.Data[stateDisabled]; d != "" {
			disabled = strings.Split(d, ",")
		}
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("read the add-on state: %w", err)
	}
	var out []Status
	for _, name := range Names {
		st := Status{Name: name, State: "absent"}
		if slices.Contains(disabled, name) {
			st.State = "disabled"
		}
		switch name {
		case KubeProxy, NodeAgent:
			dsName := kubeProxyName
			if name == NodeAgent {
				dsName = nodeAgentName
			}
			ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, dsName, metav1.GetOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("read DaemonSet kube-system/%s: %w", dsName, err)
			}
			if err == nil && ds.Labels[AddonLabel] == name {
				st.State, st.Kind = "running", "DaemonSet"
				st.Desired, st.Ready = ds.Status.DesiredNumberScheduled, ds.Status.NumberReady
				if c := ds.Spec.Template.Spec.Containers; len(c) > 0 {
					st.Image = c[0].Image
				}
			}
		case CoreDNS:
			d, err := cs.AppsV1().Deployments(ns).Get(ctx, coreDNSName, metav1.GetOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("read Deployment kube-system/%s: %w", coreDNSName, err)
			}
			if err == nil && d.Labels[AddonLabel] == name {
				st.State, st.Kind = "running", "Deployment"
				if d.Spec.Replicas != nil {
					st.Desired = *d.Spec.Replicas
				}
				st.Ready = d.Status.ReadyReplicas
				if c := d.Spec.Template.Spec.Containers; len(c) > 0 {
					st.Image = c[0].Image
				}
			}
		}
		out = append(out, st)
	}
	return out, nil
}
