// Package signingkey reads and writes the server's ed25519 signing key in the
// format Synapse and Dendrite use, one line: "ed25519 <version> <seed>", the
// seed in unpadded base64. Keeping that format lets an operator move a key
// between implementations.
package signingkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
)

// Key is a server signing key.
type Key struct {
	ID         gomatrixserverlib.KeyID // e.g. "ed25519:a_XyZw"
	PrivateKey ed25519.PrivateKey
}

// Generate makes a new key with a random version.
func Generate() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	ver := make([]byte, 3)
	if _, err := rand.Read(ver); err != nil {
		return nil, err
	}
	version := "a_" + base64.RawURLEncoding.EncodeToString(ver)
	return &Key{ID: gomatrixserverlib.KeyID("ed25519:" + version), PrivateKey: priv}, nil
}

// Write saves the key to path, readable only by its owner. It refuses to
// overwrite an existing key: losing a signing key breaks federation.
func (k *Key) Write(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write signing key: %w", err)
	}
	version := strings.TrimPrefix(string(k.ID), "ed25519:")
	seed := base64.RawStdEncoding.EncodeToString(k.PrivateKey.Seed())
	if _, err := fmt.Fprintf(f, "ed25519 %s %s\n", version, seed); err != nil {
		f.Close()
		return fmt.Errorf("write signing key: %w", err)
	}
	return f.Close()
}

// Load reads a key file.
func Load(path string) (*Key, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	fields := strings.Fields(string(raw))
	if len(fields) != 3 || fields[0] != "ed25519" {
		return nil, errors.New("signing key file: expected one line \"ed25519 <version> <base64 seed>\"")
	}
	seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(fields[2], "="))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, errors.New("signing key file: the seed is not 32 bytes of base64")
	}
	return &Key{
		ID:         gomatrixserverlib.KeyID("ed25519:" + fields[1]),
		PrivateKey: ed25519.NewKeyFromSeed(seed),
	}, nil
}
