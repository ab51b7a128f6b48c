package tlscert

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func leaf(t *testing.T, cfg *tls.Config) *x509.Certificate {
	t.Helper()
	if len(cfg.Certificates) != 1 {
		t.Fatalf("got %d certificates, want 1", len(cfg.Certificates))
	}
	c, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoadOrGenerate(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name, serverName, host string
	}{
		{"dns name", "example.org", "example.org"},
		{"dns name with port", "example.org:8448", "example.org"},
		{"ipv4 with port", "127.0.0.2:34567", "127.0.0.2"},
		{"ipv6 with port", "[::1]:8448", "::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, generated, err := LoadOrGenerate(dir, tt.serverName, now)
			if err != nil || !generated {
				t.Fatalf("first start: generated=%v err=%v", generated, err)
			}
			if err := leaf(t, cfg).VerifyHostname(tt.host); err != nil {
				t.Fatalf("certificate does not cover %s: %v", tt.host, err)
			}
			fi, err := os.Stat(filepath.Join(dir, KeyFile))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file: %v, %v", fi, err)
			}

			// A restart reuses the same certificate.
			again, generated, err := LoadOrGenerate(dir, tt.serverName, now.Add(time.Hour))
			if err != nil || generated {
				t.Fatalf("restart: generated=%v err=%v", generated, err)
			}
			if !bytes.Equal(again.Certificates[0].Certificate[0], cfg.Certificates[0].Certificate[0]) {
				t.Fatal("restart made a new certificate")
			}
		})
	}
}

func TestLoadOrGenerateReplaces(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name       string
		serverName string
		at         time.Time
	}{
		{"other host", "other.example.org", now},
		{"close to expiry", "example.org", now.Add(selfSignedLifetime - renewBefore)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			first, _, err := LoadOrGenerate(dir, "example.org", now)
			if err != nil {
				t.Fatal(err)
			}
			next, generated, err := LoadOrGenerate(dir, tt.serverName, tt.at)
			if err != nil || !generated {
				t.Fatalf("generated=%v err=%v, want a new certificate", generated, err)
			}
			if bytes.Equal(first.Certificates[0].Certificate[0], next.Certificates[0].Certificate[0]) {
				t.Fatal("certificate was not replaced")
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadOrGenerate(dir, "example.org", time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if leaf(t, cfg).Subject.CommonName != "example.org" {
		t.Fatalf("loaded the wrong certificate: %v", leaf(t, cfg).Subject)
	}
	if _, err := Load(filepath.Join(dir, "missing.crt"), filepath.Join(dir, KeyFile)); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
	// A corrupt stored certificate is an error, not silently replaced:
	// the operator should look at it.
	if err := os.WriteFile(filepath.Join(dir, CertFile), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrGenerate(dir, "example.org", time.Now()); err == nil {
		t.Fatal("LoadOrGenerate accepted a corrupt certificate")
	}
}
