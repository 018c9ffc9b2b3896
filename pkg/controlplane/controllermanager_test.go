package controlplane

import (
	"testing"

	"k8s.io/client-go/tools/cache"
)

// A controller-manager run that fails before starting its informers leaves
// its informer name reserved; the next run in this process must still get
// it.
func TestReleaseInformerNamesLetsTheControllerManagerRunAgain(t *testing.T) {
	if _, err := cache.NewInformerName("kube-controller-manager"); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.NewInformerName("kube-controller-manager"); err == nil {
		t.Fatal("client-go no longer refuses a reserved informer name; releaseInformerNames may be unneeded")
	}
	releaseInformerNames()
	second, err := cache.NewInformerName("kube-controller-manager")
	if err != nil {
		t.Fatalf("after releaseInformerNames: %v", err)
	}
	second.Release()
}
