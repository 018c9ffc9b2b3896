package apiserverconfig

import (
	"os"
	"strings"
	"testing"

	"github.com/k8s-master/k8s-master/pkg/layout"
)

func TestWriteEncryptionConfigRefusesToReplaceTheKey(t *testing.T) {
	l := layout.Layout{Root: t.TempDir()}
	if err := WriteEncryptionConfig(l); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(l.EncryptionConfig())
	if !strings.Contains(string(first), "secretbox") {
		t.Fatalf("no secretbox provider:\n%s", first)
	}
	if err := WriteEncryptionConfig(l); err == nil {
		t.Fatal("a second write replaced the key")
	}
	if again, _ := os.ReadFile(l.EncryptionConfig()); string(again) != string(first) {
		t.Fatal("the key changed")
	}
	if st, _ := os.Stat(l.EncryptionConfig()); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
}

func TestWriteAuthenticationConfigIsRewritten(t *testing.T) {
	l := layout.Layout{Root: t.TempDir()}
	for range 2 {
		if err := WriteAuthenticationConfig(l); err != nil {
			t.Fatal(err)
		}
	}
	data, _ := os.ReadFile(l.AuthenticationConfig())
	if !strings.Contains(string(data), "path: /readyz") {
		t.Fatalf("got:\n%s", data)
	}
}
