// Package users owns accounts, passwords, devices, access and refresh
// tokens, profiles and filters.
package users

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/appservice"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/gencache"
	"github.com/tessera-hs/tessera/internal/streampos"
)

// Config is what the users domain needs from the configuration.
type Config struct {
	ServerName           spec.ServerName
	Passwords            config.Passwords
	AccessTokenLifetime  time.Duration
	RefreshTokenLifetime time.Duration
	RegistrationTokens   []config.RegistrationToken
}

// Service is the users domain.
type Service struct {
	db  *database.DB
	cfg Config
	now func() time.Time
	// hashSlots bounds concurrent password hashing: each Argon2id run holds
	// hash_memory_kib of memory, so a burst of logins cannot exhaust RAM.
	hashSlots chan struct{}
	// hashIdle frees hashing memory once hashing pauses (passwords.go).
	hashIdleMu sync.Mutex
	hashIdle   *time.Timer
	hooks      Hooks
	// dummyHash is verified against when an account does not exist, so a
	// login for a missing user takes as long as a wrong password.
	dummyHash string
	// positions: the committed position of each stream (accountdata.go).
	positions streamPositions
	// announce and followers share the streams with the other processes
	// of a deployment (streams.go); nil for one process.
	announce  StreamAnnouncer
	followers map[string]*streampos.Follower
	// auth caches token lookups by token hash: every request pays for
	// authentication, and most come from a few long-lived sessions. Any
	// commit that deletes tokens or devices, or deactivates an account,
	// invalidates it.
	auth *gencache.Cache[string, authEntry]
	// ignored caches ignore lists (ignored.go).
	ignored *gencache.Cache[string, map[string]bool]
	// appServices are the registered application services
	// (SetAppServices; appservice.go); nil for none.
	appServices *appservice.Set
	// askUnknown, if set, asks the application services about an
	// unknown local user (appservicequery.go).
	askUnknown func(ctx context.Context, userID string) (bool, error)
	// storedTokens counts the registration tokens admins made
	// (regtokens.go); any makes registration need a token.
	storedTokens atomic.Int64
}

// New runs the domain's migrations and returns the service.
func New(ctx context.Context, db *database.DB, cfg Config) (*Service, error) {
	if err := db.Migrate(ctx, "users", migrations); err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx, "users_registration_tokens", regTokenMigrations); err != nil {
		return nil, err
	}
	s := &Service{
		auth:      gencache.New[string, authEntry](10000),
		ignored:   gencache.New[string, map[string]bool](50000),
		db:        db,
		cfg:       cfg,
		now:       time.Now,
		hashSlots: make(chan struct{}, runtime.NumCPU()),
	}
	h, err := s.hashPassword(ctx, randomString(16, alphaNum))
	if err != nil {
		return nil, err
	}
	s.dummyHash = h
	if s.positions, err = loadStreamPositions(ctx, db); err != nil {
		return nil, err
	}
	if err := s.loadStoredTokenCount(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// ServerName is the homeserver's name.
func (s *Service) ServerName() spec.ServerName { return s.cfg.ServerName }

func (s *Service) nowMS() int64 { return s.now().UnixMilli() }

const (
	alphaNum   = "abcdefghijklmnopqrstuvwxyz0123456789"
	upperAlpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	digits     = "0123456789"
)

// randomString returns n characters drawn uniformly from alphabet.
func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(alphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(fmt.Sprintf("crypto/rand failed: %v", err))
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b)
}

// randomToken returns a token with 256 bits of entropy and a prefix that
// makes it recognisable (in a leaked log, say) as one of ours.
func randomToken(prefix string) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

func isNoRowsErr(err error) bool { return errors.Is(err, sql.ErrNoRows) }
