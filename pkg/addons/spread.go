package addons

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// spreadCoreDNS moves one CoreDNS pod off the node that runs them all
// once another node could take it. The scheduler spreads the replicas
// only when it places them: on a new cluster both land on the first
// worker to be Ready, and a node's loss then takes the cluster's DNS
// with it. The eviction goes through the PodDisruptionBudget, and the
// replacement goes to another node by the Deployment's anti-affinity.
// It does nothing unless every replica is ready. moved tells whether it
// evicted a pod.
func spreadCoreDNS(ctx context.Context, cs kubernetes.Interface) (moved bool, err error) {
	ns := metav1.NamespaceSystem
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=" + coreDNSService + "," + AddonLabel + "=" + CoreDNS})
	if err != nil {
		return false, fmt.Errorf("list the CoreDNS pods: %w", err)
	}
	if len(pods.Items) < 2 {
		return false, nil
	}
	node := pods.Items[0].Spec.NodeName
	newest := &pods.Items[0]
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || !podReady(p) || p.Spec.NodeName != node {
			return false, nil
		}
		if p.CreationTimestamp.After(newest.CreationTimestamp.Time) {
			newest = p
		}
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/os=linux"})
	if err != nil {
		return false, fmt.Errorf("list the nodes: %w", err)
	}
	other := ""
	for i := range nodes.Items {
		if n := &nodes.Items[i]; n.Name != node && schedulable(n) {
			other = n.Name
			break
		}
	}
	if other == "" {
		return false, nil
	}
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: newest.Name, Namespace: ns}}
	if err := cs.PolicyV1().Evictions(ns).Evict(ctx, ev); err != nil {
		return false, fmt.Errorf("evict CoreDNS pod %s to spread the replicas: %w", newest.Name, err)
	}
	klog.InfoS("add-on manager evicted a CoreDNS pod so that the replicas spread over nodes", "pod", newest.Name, "node", node, "free", other)
	return true, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// schedulable tells whether a CoreDNS pod could run on the node: Ready,
// not cordoned, and no taint that the Deployment does not tolerate.
func schedulable(n *corev1.Node) bool {
	if n.Spec.Unschedulable {
		return false
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	if !ready {
		return false
	}
	for _, t := range n.Spec.Taints {
		if t.Effect == corev1.TaintEffectPreferNoSchedule || t.Key == "CriticalAddonsOnly" ||
			(t.Key == "node-role.kubernetes.io/control-plane" && t.Effect == corev1.TaintEffectNoSchedule) {
			continue
		}
		return false
	}
	return true
}
