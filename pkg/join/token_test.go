package join

import (
	"errors"
	"strings"
	"testing"
)

const pin = "sha256:7904a83ed262410a8f1a66e06c9c1b7bf7a1648ccd72569a079cd7f3d49ee8e0"

func TestParseToken(t *testing.T) {
	good := "km1:abc123.0123456789abcdefghijklmnopqrstuv@10.0.0.50:9443,[fd00::1]:9443/" + pin
	tok, err := ParseToken("  " + good + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if tok.ID != "abc123" || tok.Secret != "0123456789abcdefghijklmnopqrstuv" || len(tok.Endpoints) != 2 || tok.Endpoints[1] != "[fd00::1]:9443" || tok.CAPin != pin {
		t.Fatalf("parsed %+v", tok)
	}
	if tok.String() != good {
		t.Fatalf("String() = %q, want %q", tok.String(), good)
	}
	if strings.Contains(tok.Redacted(), tok.Secret) {
		t.Fatal("Redacted shows the secret")
	}

	bad := map[string]string{
		"empty":             "",
		"other prefix":      strings.Replace(good, "km1:", "km2:", 1),
		"no at":             strings.Replace(good, "@", "", 1),
		"no dot":            strings.Replace(good, "abc123.", "abc123", 1),
		"short id":          strings.Replace(good, "abc123", "abc12", 1),
		"upper-case id":     strings.Replace(good, "abc123", "ABC123", 1),
		"short secret":      strings.Replace(good, "0123456789abcdefghijklmnopqrstuv", "0123456789", 1),
		"secret with dash":  strings.Replace(good, "0123456789abcdef", "0123456789abcde-", 1),
		"no pin":            strings.Replace(good, "/"+pin, "", 1),
		"short pin":         strings.TrimSuffix(good, "0"),
		"pin not hex":       strings.Replace(good, "7904a8", "7904g8", 1),
		"upper-case pin":    strings.Replace(good, "7904a8", "7904A8", 1),
		"md5 pin":           strings.Replace(good, "sha256:", "md5:", 1),
		"no endpoints":      "km1:abc123.0123456789abcdefghijklmnopqrstuv@/" + pin,
		"host name":         strings.Replace(good, "10.0.0.50", "master.example", 1),
		"no port":           strings.Replace(good, "10.0.0.50:9443", "10.0.0.50", 1),
		"port zero":         strings.Replace(good, ":9443,", ":0,", 1),
		"unbracketed v6":    strings.Replace(good, "[fd00::1]:9443", "fd00::1:9443", 1),
		"unspecified":       strings.Replace(good, "10.0.0.50", "0.0.0.0", 1),
		"empty endpoint":    strings.Replace(good, ",", ",,", 1),
		"trailing garbage":  good + "x",
		"kubeadm style":     "abcdef.0123456789abcdef",
		"extra at":          strings.Replace(good, "@", "@@", 1),
		"leading zero port": strings.Replace(good, ":9443,", ":09443,", 1),
	}
	for name, s := range bad {
		if _, err := ParseToken(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParseToken(%q) err = %v, want ErrMalformed", name, s, err)
		}
	}
}

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		tok, err := NewToken([]string{"192.0.2.1:9443"}, pin)
		if err != nil {
			t.Fatal(err)
		}
		if seen[tok.ID+tok.Secret] {
			t.Fatal("two tokens alike")
		}
		seen[tok.ID+tok.Secret] = true
		back, err := ParseToken(tok.String())
		if err != nil || back.Secret != tok.Secret {
			t.Fatalf("round trip: %v", err)
		}
	}
	if _, err := NewToken([]string{"not-an-endpoint"}, pin); err == nil {
		t.Fatal("NewToken accepted a bad endpoint")
	}
}

func TestHashSecret(t *testing.T) {
	a := HashSecret("abc123", "s1")
	if a == HashSecret("abc123", "s2") || a == HashSecret("abc124", "s1") || len(a) != 64 {
		t.Fatal("hash does not separate ids and secrets")
	}
	if strings.Contains(a, "s1") {
		t.Fatal("hash contains the secret")
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("km1:abc123.0123456789abcdefghijklmnopqrstuv@10.0.0.50:9443,[fd00::1]:9443/" + pin)
	f.Add("km1:abc123.0123456789abcdefghijklmnopqrstuv@10.0.0.50:9443/sha256:")
	f.Add("km1:@/")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not marked malformed: %v", err)
			}
			return
		}
		// Whatever parses must render to itself and parse the same.
		again, err := ParseToken(tok.String())
		if err != nil || again.String() != tok.String() {
			t.Fatalf("round trip of %q: %v", s, err)
		}
		if strings.Contains(tok.Redacted(), "."+tok.Secret+"@") || !strings.Contains(tok.Redacted(), ".<secret>@") {
			t.Fatalf("redacted form %q leaks the secret", tok.Redacted())
		}
	})
}

// A worker token given where a master token is expected is named as such.
func TestParseTokenRefusesWorkerToken(t *testing.T) {
	_, err := ParseToken("abcdef.0123456789abcdef")
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "this is a worker token") || !strings.Contains(err.Error(), "k8s-master token create") {
		t.Errorf("ParseToken(worker token) = %v", err)
	}
}
