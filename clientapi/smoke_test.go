package clientapi_test

import (
	"context"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

func TestSmokeRegisterWhoami(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Register("alice", "correct horse")
	who, err := c.Whoami(context.Background())
	if err != nil {
		t.Fatalf("whoami: %v", err)
	}
	if who.UserID != srv.UserID("alice") || who.DeviceID == "" {
		t.Fatalf("whoami = %+v", who)
	}
}
