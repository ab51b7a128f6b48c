package oauth

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/users"
)

// TestUsedRefreshTokensBounded: a device that refreshes for ever keeps
// only the last usedRefreshTokensKept used tokens on record, and reuse of
// a recent one is still caught.
func TestUsedRefreshTokensBounded(t *testing.T) {
	ctx := context.Background()
	db, err := database.Open(filepath.Join(t.TempDir(), "t.db"), database.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	us, err := users.New(ctx, db, users.Config{ServerName: spec.ServerName("t.test"), AccessTokenLifetime: time.Minute,
		Passwords: config.Passwords{HashMemoryKiB: 64, HashIterations: 1, MinLength: 1}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, db, us, Config{CodeLifetime: time.Minute, DeviceCodeLifetime: time.Minute,
		DeviceCodeInterval: time.Second, SessionLifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := us.CreateAccount(ctx, users.NewAccount{Localpart: "alice", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	client, err := s.Register(ctx, ClientMetadata{ClientURI: "https://example.com/", ApplicationType: "native",
		RedirectURIs: []string{"http://127.0.0.1/cb"}, GrantTypes: []string{GrantAuthorizationCode, GrantRefreshToken}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.startSession(ctx, client, "@alice:t.test", "DEVICE0001", scopeAPI+" "+scopeDevicePrefix+"DEVICE0001", users.ClientInfo{})
	if err != nil {
		t.Fatal(err)
	}
	var used []string
	for i := 0; i < usedRefreshTokensKept+10; i++ {
		used = append(used, tok.RefreshToken)
		if tok, err = s.refresh(ctx, client, tok.RefreshToken); err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
		// First use of the new access token revokes the old refresh token.
		if _, err := us.Authenticate(ctx, tok.AccessToken, users.ClientInfo{}); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM oauth_used_refresh_tokens`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != usedRefreshTokensKept {
		t.Fatalf("%d used refresh tokens kept, want %d", n, usedRefreshTokensKept)
	}
	_, err = s.refresh(ctx, client, used[len(used)-2])
	if e, ok := err.(*Error); !ok || e.Code != "invalid_grant" {
		t.Fatalf("reuse: %v, want invalid_grant", err)
	}
	if _, err := us.Authenticate(ctx, tok.AccessToken, users.ClientInfo{}); err == nil {
		t.Fatal("the family survived the reuse")
	}
}
