package clientapi_test

import (
	"net/http"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestMediaQuota: a user's uploads may total media.quota_bytes_per_user;
// an upload that would pass it is refused with 403 M_FORBIDDEN (the spec's
// answer for a quota) and nothing is stored, while other users are not
// affected.
func TestMediaQuota(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) { c.Media.QuotaBytesPerUser = 2500 })
	alice := srv.Register("alice", "password1").AccessToken
	bob := srv.Register("bob", "password1").AccessToken
	uploadOK(t, srv, alice, "application/octet-stream", "", randomBytes(t, 1000))
	uploadOK(t, srv, alice, "application/octet-stream", "", randomBytes(t, 1000))
	before := storedFiles(t, srv)
	upload(t, srv, alice, "application/octet-stream", "", randomBytes(t, 1000)).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	if n := storedFiles(t, srv); n != before {
		t.Fatalf("%d files stored, want %d: the refused upload was kept", n, before)
	}
	// What is left of the quota still goes in; then nothing more.
	uploadOK(t, srv, alice, "application/octet-stream", "", randomBytes(t, 500))
	upload(t, srv, alice, "application/octet-stream", "", []byte("x")).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	// The quota is per user.
	uploadOK(t, srv, bob, "application/octet-stream", "", randomBytes(t, 2000))
}

// TestMediaUploadRateLimit: uploads and reserved IDs share a per-user
// token bucket (rate_limits.media_uploads_per_user): 429 M_LIMIT_EXCEEDED
// with retry_after_ms past the burst, for that user only.
func TestMediaUploadRateLimit(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) {
		c.RateLimits.Enabled = true
		c.RateLimits.MediaUploadsPerUser = config.Rate{PerSecond: 0.01, Burst: 3}
		c.RateLimits.RegisterPerAddress = config.Rate{PerSecond: 100, Burst: 100}
	})
	alice := srv.Register("alice", "password1").AccessToken
	bob := srv.Register("bob", "password1").AccessToken
	uploadOK(t, srv, alice, "text/plain", "", []byte("one"))
	uploadOK(t, srv, alice, "text/plain", "", []byte("two"))
	post(t, srv, "/_matrix/media/v1/create", alice, nil).expect(t, http.StatusOK, "")
	r := upload(t, srv, alice, "text/plain", "", []byte("four")).expect(t, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	if ms, ok := r.Body["retry_after_ms"].(float64); !ok || ms <= 0 {
		t.Fatalf("no retry_after_ms: %s", r.Raw)
	}
	post(t, srv, "/_matrix/media/v1/create", alice, nil).expect(t, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	uploadOK(t, srv, bob, "text/plain", "", []byte("bob's"))
}
