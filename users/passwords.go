package users

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"
	"unicode"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// maxPasswordBytes caps what we hash; Synapse uses the same limit.
const maxPasswordBytes = 512

// CheckPasswordPolicy returns M_WEAK_PASSWORD if pw breaks the configured
// rules.
func (s *Service) CheckPasswordPolicy(pw string) error {
	p := s.cfg.Passwords
	if len(pw) > maxPasswordBytes {
		return mxerr.InvalidParam("Password is longer than %d bytes", maxPasswordBytes)
	}
	if len([]rune(pw)) < p.MinLength {
		return mxerr.WeakPassword("Password must be at least %d characters long", p.MinLength)
	}
	var digit, lower, upper, symbol bool
	for _, r := range pw {
		switch {
		case unicode.IsDigit(r):
			digit = true
		case unicode.IsLower(r):
			lower = true
		case unicode.IsUpper(r):
			upper = true
		default:
			symbol = true
		}
	}
	switch {
	case p.RequireDigit && !digit:
		return mxerr.WeakPassword("Password must contain a digit")
	case p.RequireLowercase && !lower:
		return mxerr.WeakPassword("Password must contain a lowercase letter")
	case p.RequireUppercase && !upper:
		return mxerr.WeakPassword("Password must contain an uppercase letter")
	case p.RequireSymbol && !symbol:
		return mxerr.WeakPassword("Password must contain a symbol")
	}
	return nil
}

// acquireHashSlot waits for a free hashing slot, or for ctx to end.
func (s *Service) acquireHashSlot(ctx context.Context) error {
	select {
	case s.hashSlots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// releaseHashSlot frees a slot. When the last hash of a burst is done,
// the memory the hashes used (hash_memory_kib each, 64 MiB by default) is
// handed back to the system a moment later: the garbage collector would
// keep it for minutes, and a server that has just registered a thousand
// users would sit at several hundred MiB for no reason.
func (s *Service) releaseHashSlot() {
	<-s.hashSlots
	if len(s.hashSlots) > 0 {
		return
	}
	s.hashIdleMu.Lock()
	defer s.hashIdleMu.Unlock()
	if s.hashIdle == nil {
		s.hashIdle = time.AfterFunc(hashIdleDelay, func() {
			if len(s.hashSlots) == 0 {
				debug.FreeOSMemory()
			}
		})
		return
	}
	s.hashIdle.Reset(hashIdleDelay)
}

// hashIdleDelay is how long hashing must pause before its memory is freed.
const hashIdleDelay = time.Second

// hashPassword hashes with Argon2id into the PHC string format.
func (s *Service) hashPassword(ctx context.Context, pw string) (string, error) {
	if err := s.acquireHashSlot(ctx); err != nil {
		return "", err
	}
	defer s.releaseHashSlot()
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	m, t := s.cfg.Passwords.HashMemoryKiB, s.cfg.Passwords.HashIterations
	const threads = 1
	key := argon2.IDKey([]byte(pw), salt, t, m, threads, 32)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, m, t, threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

var errBadHash = errors.New("unrecognised password hash")

// verifyPassword checks pw against an Argon2id hash, or a bcrypt hash as
// Synapse writes them (so accounts can be imported from Synapse).
func (s *Service) verifyPassword(ctx context.Context, hash, pw string) (bool, error) {
	if err := s.acquireHashSlot(ctx); err != nil {
		return false, err
	}
	defer s.releaseHashSlot()
	if strings.HasPrefix(hash, "$2") {
		return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil, nil
	}
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errBadHash
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false, errBadHash
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil {
		return false, errBadHash
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
