package version

import "testing"

func TestCompare(t *testing.T) {
	cases := []struct {
		a, b Versions
		want int
		ok   bool
	}{
		{Versions{Kubernetes: "v1.37.2"}, Versions{Kubernetes: "v1.36.3"}, 1, true},
		{Versions{Kubernetes: "v1.36.3"}, Versions{Kubernetes: "v1.37.0"}, -1, true},
		{Versions{Release: "v0.2.1", Kubernetes: "v1.37.2"}, Versions{Release: "v0.2.0", Kubernetes: "v1.37.2"}, 1, true},
		// A development build sorts below its release.
		{Versions{Release: "v0.2.0-dev.8.g82c8656", Kubernetes: "v1.37.2"}, Versions{Release: "v0.2.0", Kubernetes: "v1.37.2"}, -1, true},
		{Versions{Release: "dev", Kubernetes: "v1.37.2"}, Versions{Release: "v0.2.0", Kubernetes: "v1.37.2"}, 0, true},
		{Versions{Kubernetes: "v0.0.0-master+$Format:%H$"}, Versions{Kubernetes: "v1.37.2"}, 0, false},
		{Versions{}, Versions{Kubernetes: "v1.37.2"}, 0, false},
	}
	for _, tc := range cases {
		got, ok := Compare(tc.a, tc.b)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Compare(%v, %v) = %d, %v; want %d, %v", tc.a, tc.b, got, ok, tc.want, tc.ok)
		}
	}
	if m := (Versions{Kubernetes: "v1.37.2"}).KubernetesMinor(); m != "1.37" {
		t.Errorf("minor %q", m)
	}
	if m := Legacy.KubernetesMinor(); m != "1.36" {
		t.Errorf("legacy minor %q", m)
	}
}
