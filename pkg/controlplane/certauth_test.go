package controlplane

import (
	"crypto/x509"
	"net/http"
	"testing"

	apiextensionsapiserver "k8s.io/apiextensions-apiserver/pkg/apiserver"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	aggregatorapiserver "k8s.io/kube-aggregator/pkg/apiserver"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/pkg/controlplane"
	controlplaneapiserver "k8s.io/kubernetes/pkg/controlplane/apiserver"

	"github.com/k8s-master/k8s-master/pkg/certauthcache"
)

// recordingCA is a client CA provider that keeps its listeners.
type recordingCA struct {
	listeners []dynamiccertificates.Listener
}

func (r *recordingCA) AddListener(l dynamiccertificates.Listener) {
	r.listeners = append(r.listeners, l)
}
func (r *recordingCA) Name() string                              { return "test" }
func (r *recordingCA) CurrentCABundleContent() []byte            { return nil }
func (r *recordingCA) VerifyOptions() (x509.VerifyOptions, bool) { return x509.VerifyOptions{}, false }

// Each of the three servers' authenticators goes behind a cache that
// listens to that server's client CA provider: a CA change must reach it.
func TestCacheCertAuthenticationsWiring(t *testing.T) {
	inner := authenticator.RequestFunc(func(*http.Request) (*authenticator.Response, bool, error) { return nil, false, nil })
	generic := func(ca *recordingCA) genericapiserver.Config {
		return genericapiserver.Config{
			Authentication: genericapiserver.AuthenticationInfo{Authenticator: inner},
			SecureServing:  &genericapiserver.SecureServingInfo{ClientCA: ca},
		}
	}
	cas := []*recordingCA{{}, {}, {}}
	kube := generic(cas[0])
	cfg := &apiserverapp.Config{
		KubeAPIs:      &controlplane.Config{ControlPlane: controlplaneapiserver.Config{Generic: &kube}},
		ApiExtensions: &apiextensionsapiserver.Config{GenericConfig: &genericapiserver.RecommendedConfig{Config: generic(cas[1])}},
		Aggregator:    &aggregatorapiserver.Config{GenericConfig: &genericapiserver.RecommendedConfig{Config: generic(cas[2])}},
	}
	rh := &genericoptions.RequestHeaderAuthenticationOptions{UsernameHeaders: []string{"X-Remote-User"}}
	if err := cacheCertAuthentications(cfg, rh); err != nil {
		t.Fatal(err)
	}
	for i, g := range []*genericapiserver.Config{cfg.KubeAPIs.ControlPlane.Generic, &cfg.ApiExtensions.GenericConfig.Config, &cfg.Aggregator.GenericConfig.Config} {
		cache, ok := g.Authentication.Authenticator.(*certauthcache.Authenticator)
		if !ok {
			t.Errorf("server %d: authenticator is %T, want the cache", i, g.Authentication.Authenticator)
			continue
		}
		if len(cas[i].listeners) != 1 || cas[i].listeners[0] != dynamiccertificates.Listener(cache) {
			t.Errorf("server %d: CA provider listeners %v, want its cache", i, cas[i].listeners)
		}
	}

	// Without a CA provider to listen to, a cache could outlive a CA
	// rotation: refused.
	bare := genericapiserver.Config{Authentication: genericapiserver.AuthenticationInfo{Authenticator: inner}}
	cfg.KubeAPIs.ControlPlane.Generic = &bare
	if err := cacheCertAuthentications(cfg, rh); err == nil {
		t.Error("a server without a client CA provider was accepted")
	}
}
