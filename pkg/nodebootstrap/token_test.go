package nodebootstrap

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/clientcmd"
)

func TestParseToken(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" = refused
	}{
		{"abcdef.0123456789abcdef", "abcdef.0123456789abcdef"},
		{"  abcdef.0123456789abcdef\n", "abcdef.0123456789abcdef"},
		{"ABCDEF.0123456789abcdef", ""},
		{"abcde.0123456789abcdef", ""},
		{"abcdef.0123456789abcde", ""},
		{"abcdef.0123456789abcdef0", ""},
		{"abcdef0123456789abcdef", ""},
		{"abcdef.0123456789abcd-f", ""},
		{"km1:abcdef.0123456789abcdefghijklmnopqrstuv@127.0.0.1:9443/sha256:" + strings.Repeat("0", 64), ""},
		{"", ""},
	} {
		got, err := ParseToken(tc.in)
		if tc.want == "" {
			if err == nil || !errors.Is(err, ErrMalformed) || IsWorkerToken(tc.in) {
				t.Errorf("ParseToken(%q) = %v, %v; want ErrMalformed", tc.in, got, err)
			}
			continue
		}
		if err != nil || got.String() != tc.want || !IsWorkerToken(tc.in) {
			t.Errorf("ParseToken(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestNewTokenIsFreshAndParses(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if back, err := ParseToken(tok.String()); err != nil || back != tok {
			t.Fatalf("%v does not round-trip: %v %v", tok, back, err)
		}
		if seen[tok.ID] {
			t.Fatalf("ID %s made twice", tok.ID)
		}
		seen[tok.ID] = true
	}
}

// The Secret is what the apiserver's bootstrap authenticator, the
// bootstrap signer and the token cleaner read.
func TestSecretShape(t *testing.T) {
	now := time.Date(2026, 12, 2, 19, 0, 0, 0, time.UTC)
	s := Secret(Token{ID: "abcdef", Secret: "0123456789abcdef"}, 2*time.Hour, "rack 4", now)
	if s.Name != "bootstrap-token-abcdef" || s.Namespace != "kube-system" || s.Type != "bootstrap.kubernetes.io/token" {
		t.Errorf("secret %s/%s of type %s", s.Namespace, s.Name, s.Type)
	}
	want := map[string]string{
		"token-id":                       "abcdef",
		"token-secret":                   "0123456789abcdef",
		"usage-bootstrap-authentication": "true",
		"usage-bootstrap-signing":        "true",
		"auth-extra-groups":              "system:bootstrappers:kubeadm:default-node-token",
		"expiration":                     "2026-12-02T21:00:00Z",
		"description":                    "rack 4",
	}
	if len(s.Data) != len(want) {
		t.Errorf("secret has keys %v, want %v", s.Data, want)
	}
	for k, v := range want {
		if string(s.Data[k]) != v {
			t.Errorf("%s = %q, want %q", k, s.Data[k], v)
		}
	}
	if s := Secret(Token{ID: "abcdef", Secret: "0123456789abcdef"}, 0, "", now); s.Data["expiration"] != nil || s.Data["description"] != nil {
		t.Errorf("no TTL and no description still set %v", s.Data)
	}
}

func TestCreateListCheckRevoke(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(&corev1.Secret{
		// Not a bootstrap token: never listed.
		ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "kube-system"},
		Data:       map[string][]byte{"token-id": []byte("zzzzzz")},
	})
	tok, err := CreateToken(ctx, cs, time.Hour, "first")
	if err != nil {
		t.Fatal(err)
	}
	expired := Secret(Token{ID: "old000", Secret: "0123456789abcdef"}, time.Hour, "", time.Now().Add(-2*time.Hour))
	if _, err := cs.CoreV1().Secrets("kube-system").Create(ctx, expired, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	list, err := ListTokens(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != tok.ID || list[0].Description != "first" || list[0].State(time.Now()) != "valid" || list[1].State(time.Now()) != "expired" {
		t.Fatalf("list = %+v", list)
	}
	if strings.Join(list[0].Usages, ",") != "authentication,signing" {
		t.Errorf("usages %v", list[0].Usages)
	}
	if err := CheckToken(ctx, cs, tok); err != nil {
		t.Errorf("CheckToken of a fresh token: %v", err)
	}
	for _, bad := range []Token{{ID: tok.ID, Secret: "ffffffffffffffff"}, {ID: "old000", Secret: "0123456789abcdef"}, {ID: "nonono", Secret: "0123456789abcdef"}} {
		if err := CheckToken(ctx, cs, bad); !errors.Is(err, ErrNoSuchToken) {
			t.Errorf("CheckToken(%v) = %v, want ErrNoSuchToken", bad, err)
		}
	}
	if err := RevokeToken(ctx, cs, tok.String()); err != nil {
		t.Fatal(err)
	}
	if err := RevokeToken(ctx, cs, tok.ID); !errors.Is(err, ErrNoSuchToken) {
		t.Errorf("second revoke: %v, want ErrNoSuchToken", err)
	}
	if err := CheckToken(ctx, cs, tok); !errors.Is(err, ErrNoSuchToken) {
		t.Errorf("CheckToken of a revoked token: %v", err)
	}
}

func TestJoinCommandAndKubeconfig(t *testing.T) {
	tok := Token{ID: "abcdef", Secret: "0123456789abcdef"}
	pin := "sha256:" + strings.Repeat("ab", 32)
	if got, want := JoinCommand("10.0.0.50:6443", tok, pin), "kubeadm join 10.0.0.50:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash "+pin; got != want {
		t.Errorf("JoinCommand = %q\nwant %q", got, want)
	}
	data, err := BootstrapKubeconfig("https://[fd00::50]:6443", []byte("CA PEM"), tok)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.Clusters[ctx.Cluster].Server != "https://[fd00::50]:6443" || string(cfg.Clusters[ctx.Cluster].CertificateAuthorityData) != "CA PEM" || cfg.AuthInfos[ctx.AuthInfo].Token != tok.String() {
		t.Errorf("bootstrap kubeconfig:\n%s", data)
	}
}
