// Package tlscert provides the federation listener's TLS certificate: the
// operator's certificate and key, or a self-signed certificate generated
// into the data directory for test networks.
//
// Other servers must refuse a self-signed certificate unless they skip
// verification, so a generated certificate only serves servers that are
// configured to trust anything (the test harness, private test networks).
// https://spec.matrix.org/v1.19/server-server-api/#tls
package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names of the generated certificate and key in the data directory.
const (
	CertFile = "federation_tls.crt"
	KeyFile  = "federation_tls.key"
)

const (
	// selfSignedLifetime is how long a generated certificate is valid.
	selfSignedLifetime = 365 * 24 * time.Hour
	// renewBefore: a generated certificate this close to expiry is
	// replaced at start-up rather than left to expire while running.
	renewBefore = 30 * 24 * time.Hour
)

// Load reads a PEM certificate (with its chain) and private key.
func Load(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return serverConfig(cert), nil
}

// LoadOrGenerate returns the self-signed certificate for serverName kept in
// dir, generating it when there is none, when it does not cover the server
// name's host, or when it expires within 30 days. generated reports whether
// a new certificate was written, so that the caller can warn about it.
func LoadOrGenerate(dir, serverName string, now time.Time) (cfg *tls.Config, generated bool, err error) {
	host := serverName
	if h, _, err := net.SplitHostPort(serverName); err == nil {
		host = h
	}
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	switch {
	case err == nil && usable(cert, host, now):
		return serverConfig(cert), false, nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, false, fmt.Errorf("load self-signed TLS certificate from %s: %w", dir, err)
	}
	certPEM, keyPEM, err := generate(host, now)
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create data directory: %w", err)
	}
	// The key first: a certificate without its key would fail every
	// later start instead of being regenerated.
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, false, err
	}
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return nil, false, err
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, false, fmt.Errorf("use generated TLS certificate: %w", err)
	}
	return serverConfig(cert), true, nil
}

// usable reports whether a stored certificate still fits: valid for host
// and not about to expire.
func usable(cert tls.Certificate, host string, now time.Time) bool {
	if len(cert.Certificate) == 0 {
		return false
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return false
	}
	return leaf.VerifyHostname(host) == nil && now.Add(renewBefore).Before(leaf.NotAfter)
}

// generate makes a self-signed ECDSA P-256 certificate for host (a DNS
// name or an IP address).
func generate(host string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("generate TLS certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host, Organization: []string{"Tessera self-signed"}},
		// Backdated a little so that a peer whose clock is slightly
		// behind still accepts it (when it accepts self-signed at all).
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create TLS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode TLS key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

// writeFile replaces path atomically, so that a crash never leaves half a
// key behind.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func serverConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}
}
