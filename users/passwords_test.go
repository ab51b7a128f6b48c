package users

import (
	"context"
	"strings"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// TestPasswordHashCost: new hashes use the configured cost, by default
// OWASP's lower-memory Argon2id set (m=19 MiB, t=2, p=1), and a hash made
// with other parameters (such as the 64 MiB of earlier versions) still
// verifies, with the parameters it records.
func TestPasswordHashCost(t *testing.T) {
	ctx := context.Background()
	db := dbtest.Open(t)
	t.Cleanup(func() { db.Close() })
	def := config.Default().Passwords
	s, err := New(ctx, db, Config{ServerName: "tessera.test", Passwords: def})
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.hashPassword(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if want := "$argon2id$v=19$m=19456,t=2,p=1$"; !strings.HasPrefix(h, want) {
		t.Fatalf("hash %q, want the prefix %q", h, want)
	}

	tests := []struct {
		name   string
		m, t   uint32
		pw     string
		wantOK bool
	}{
		{"older, costlier parameters", 64 * 1024, 1, "correct horse", true},
		{"cheap parameters", 64, 3, "correct horse", true},
		{"wrong password", 64, 3, "battery staple", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := &Service{cfg: Config{Passwords: config.Passwords{HashMemoryKiB: tt.m, HashIterations: tt.t}},
				hashSlots: make(chan struct{}, 1)}
			oh, err := old.hashPassword(ctx, "correct horse")
			if err != nil {
				t.Fatal(err)
			}
			ok, err := s.verifyPassword(ctx, oh, tt.pw)
			if err != nil || ok != tt.wantOK {
				t.Fatalf("verify %q against %q = %v, %v; want %v", tt.pw, oh, ok, err, tt.wantOK)
			}
		})
	}
}
