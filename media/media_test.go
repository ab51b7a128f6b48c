package media

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

func svcStart(t *testing.T, dir string, cfg Config) *Service {
	t.Helper()
	db, err := database.Open(filepath.Join(dir, "tessera.db"), database.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg.ServerName = "example.org"
	cfg.Dir = filepath.Join(dir, "media")
	if cfg.MaxUploadBytes == 0 {
		cfg.MaxUploadBytes = 1 << 20
	}
	if cfg.UnusedIDLifetime == 0 {
		cfg.UnusedIDLifetime = time.Hour
	}
	if cfg.MaxPendingPerUser == 0 {
		cfg.MaxPendingPerUser = 2
	}
	s, err := New(context.Background(), db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func svcWantErr(t *testing.T, err error, status int, code string) {
	t.Helper()
	me, ok := mxerr.As(err)
	if !ok || me.Status != status || me.Code != code {
		t.Fatalf("error %v, want %d %s", err, status, code)
	}
}

func TestServiceAsyncUpload(t *testing.T) {
	ctx := context.Background()
	s := svcStart(t, t.TempDir(), Config{})
	mxc, expires, err := s.Create(ctx, "@a:example.org")
	if err != nil || time.Until(expires) < 59*time.Minute {
		t.Fatalf("create: %v, %v", err, expires)
	}
	id := strings.TrimPrefix(mxc, "mxc://example.org/")
	if !ValidMediaID(id) || len(id) < 24 {
		t.Fatalf("media ID %q", id)
	}
	if _, _, err := s.Create(ctx, "@a:example.org"); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Create(ctx, "@a:example.org")
	svcWantErr(t, err, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")

	_, err = s.Get(ctx, "example.org", id, 20*time.Millisecond, false)
	svcWantErr(t, err, http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")
	err = s.UploadTo(ctx, "@b:example.org", "example.org", id, "text/plain", "", strings.NewReader("x"))
	svcWantErr(t, err, http.StatusForbidden, "M_FORBIDDEN")
	err = s.UploadTo(ctx, "@a:example.org", "other.org", id, "text/plain", "", strings.NewReader("x"))
	svcWantErr(t, err, http.StatusNotFound, "M_NOT_FOUND")

	got := make(chan error, 1)
	go func() {
		m, err := s.Get(ctx, "example.org", id, 10*time.Second, false)
		if err == nil && (m.Size != 5 || m.ContentType != "text/plain") {
			t.Errorf("waited media: %+v", m)
		}
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := s.UploadTo(ctx, "@a:example.org", "example.org", id, "text/plain", "n.txt", strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting Get not woken by the upload")
	}
	err = s.UploadTo(ctx, "@a:example.org", "example.org", id, "text/plain", "", strings.NewReader("again"))
	svcWantErr(t, err, http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA")
	// One pending slot is free again.
	if _, _, err := s.Create(ctx, "@a:example.org"); err != nil {
		t.Fatal(err)
	}
}

func TestServiceExpiryAndFreeze(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := svcStart(t, dir, Config{})
	now := time.Now()
	s.now = func() time.Time { return now }
	mxc, _, err := s.Create(ctx, "@a:example.org")
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimPrefix(mxc, "mxc://example.org/")
	now = now.Add(2 * time.Hour)
	err = s.UploadTo(ctx, "@a:example.org", "example.org", id, "text/plain", "", strings.NewReader("x"))
	svcWantErr(t, err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = s.Get(ctx, "example.org", id, time.Second, false)
	svcWantErr(t, err, http.StatusNotFound, "M_NOT_FOUND")
	// Expired IDs do not count against the pending limit.
	for i := 0; i < 2; i++ {
		if _, _, err := s.Create(ctx, "@a:example.org"); err != nil {
			t.Fatal(err)
		}
	}

	// Media from before the recorded freeze is served by legacy
	// endpoints, newer media is not; the marker survives a restart.
	frozen := s.frozenAfter
	old, err := s.Upload(ctx, "@a:example.org", "text/plain", "", strings.NewReader("old"))
	if err != nil {
		t.Fatal(err)
	}
	s.now = time.Now
	newer, err := s.Upload(ctx, "@a:example.org", "text/plain", "", strings.NewReader("new"))
	if err != nil {
		t.Fatal(err)
	}
	if !old.Created.After(frozen) {
		// old was created at the (fake) future time: it is frozen too.
		t.Fatalf("fake clock not ahead of the freeze")
	}
	s2 := svcStart(t, dir, Config{})
	if !s2.frozenAfter.Equal(frozen) {
		t.Fatalf("freeze moved from %v to %v on restart", frozen, s2.frozenAfter)
	}
	_, err = s2.Get(ctx, "example.org", newer.MediaID, 0, true)
	svcWantErr(t, err, http.StatusNotFound, "M_NOT_FOUND")
	if _, err := s2.Get(ctx, "example.org", newer.MediaID, 0, false); err != nil {
		t.Fatal(err)
	}
	s3 := svcStart(t, dir, Config{LegacyCutoff: time.Now().Add(24 * time.Hour)})
	if _, err := s3.Get(ctx, "example.org", old.MediaID, 0, true); err != nil {
		t.Fatalf("legacy download before the cutoff: %v", err)
	}
}

func TestServiceUploadTooLarge(t *testing.T) {
	s := svcStart(t, t.TempDir(), Config{MaxUploadBytes: 4})
	_, err := s.Upload(context.Background(), "@a:example.org", "text/plain", "", strings.NewReader("12345"))
	svcWantErr(t, err, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	if _, err := s.Upload(context.Background(), "@a:example.org", "text/plain", "", strings.NewReader("1234")); err != nil {
		t.Fatal(err)
	}
}

func TestSnapThumbSize(t *testing.T) {
	for _, tc := range []struct {
		w, h   int
		method string
		want   thumbSize
	}{
		{1, 1, "crop", thumbSize{32, 32, "crop"}},
		{32, 32, "crop", thumbSize{32, 32, "crop"}},
		{33, 20, "crop", thumbSize{96, 96, "crop"}},
		{200, 200, "crop", thumbSize{320, 240, "scale"}},
		{10, 10, "scale", thumbSize{320, 240, "scale"}},
		{641, 100, "scale", thumbSize{800, 600, "scale"}},
		{5000, 5000, "scale", thumbSize{800, 600, "scale"}},
	} {
		if got := snapThumbSize(tc.w, tc.h, tc.method); got != tc.want {
			t.Errorf("%dx%d %s: %+v, want %+v", tc.w, tc.h, tc.method, got, tc.want)
		}
	}
}
