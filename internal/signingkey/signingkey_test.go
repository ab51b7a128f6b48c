package signingkey

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteLoadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "signing.key")
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Write(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v, %v", fi, err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || !got.PrivateKey.Equal(k.PrivateKey) {
		t.Fatalf("loaded %s, want %s", got.ID, k.ID)
	}
	msg := []byte("hello")
	if !ed25519.Verify(k.PrivateKey.Public().(ed25519.PublicKey), msg, ed25519.Sign(got.PrivateKey, msg)) {
		t.Fatal("loaded key does not sign like the original")
	}
	if err := k.Write(path); err == nil {
		t.Fatal("overwrote an existing signing key")
	}
}

func TestLoadRejectsBadFiles(t *testing.T) {
	for name, content := range map[string]string{
		"empty":      "",
		"wrong algo": "rsa a_abc AAAA\n",
		"short seed": "ed25519 a_abc AAAA\n",
		"not base64": "ed25519 a_abc !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
	} {
		path := filepath.Join(t.TempDir(), "k")
		os.WriteFile(path, []byte(content), 0o600)
		if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "signing key") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}
