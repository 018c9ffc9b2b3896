package addons

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestSpreadCoreDNS(t *testing.T) {
	node := func(name string, ready bool, taints ...corev1.Taint) *corev1.Node {
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/os": "linux"}},
			Spec:   corev1.NodeSpec{Taints: taints},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}}}
	}
	pod := func(name, node string, age time.Duration) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system",
			Labels:            map[string]string{"k8s-app": "kube-dns", AddonLabel: CoreDNS},
			CreationTimestamp: metav1.NewTime(time.Now().Add(-age))},
			Spec:   corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	}
	noSchedule := corev1.Taint{Key: "node.kubernetes.io/disk-pressure", Effect: corev1.TaintEffectNoSchedule}
	controlPlane := corev1.Taint{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}
	for _, c := range []struct {
		name    string
		objs    []runtime.Object
		evicted string
	}{
		{"both on w1, w2 free: the newer moves", []runtime.Object{node("w1", true), node("w2", true), pod("old", "w1", time.Hour), pod("new", "w1", time.Minute)}, "new"},
		{"w2 tolerated control-plane taint", []runtime.Object{node("w1", true), node("w2", true, controlPlane), pod("old", "w1", time.Hour), pod("new", "w1", time.Minute)}, "new"},
		{"already spread", []runtime.Object{node("w1", true), node("w2", true), pod("a", "w1", time.Hour), pod("b", "w2", time.Minute)}, ""},
		{"one node", []runtime.Object{node("w1", true), pod("a", "w1", time.Hour), pod("b", "w1", time.Minute)}, ""},
		{"w2 not Ready", []runtime.Object{node("w1", true), node("w2", false), pod("a", "w1", time.Hour), pod("b", "w1", time.Minute)}, ""},
		{"w2 tainted", []runtime.Object{node("w1", true), node("w2", true, noSchedule), pod("a", "w1", time.Hour), pod("b", "w1", time.Minute)}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cs := fake.NewClientset(c.objs...)
			evicted := ""
			cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() == "eviction" {
					evicted = a.(k8stesting.CreateAction).GetObject().(metav1.Object).GetName()
					return true, nil, nil
				}
				return false, nil, nil
			})
			moved, err := spreadCoreDNS(context.Background(), cs)
			if err != nil {
				t.Fatal(err)
			}
			if evicted != c.evicted || moved != (c.evicted != "") {
				t.Errorf("evicted %q (moved %v), want %q", evicted, moved, c.evicted)
			}
		})
	}
}
