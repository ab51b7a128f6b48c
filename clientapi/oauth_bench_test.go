package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// BenchmarkOAuthCodeFlow is a whole sign-in on loopback, as a new browser
// does it: the authorisation request, the login page and its post, the
// consent page and its post, and the code exchange. The test server hashes
// passwords cheaply (64 KiB, one pass), so this is the flow's own cost;
// with the production Argon2id settings the password check adds its time.
func BenchmarkOAuthCodeFlow(b *testing.B) {
	srv := testserver.Start(b)
	srv.Register("alice", "benchmark password")
	conf := nativeClient(b, srv)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		verifier := oauth2.GenerateVerifier()
		code := authorizeCode(b, newBrowser(b, srv), conf, verifier, "alice", "benchmark password")
		if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOAuthTokenRefresh is the token endpoint under the refresh
// grant, one client rotating its refresh token as fast as it can: each op
// is one POST /token (a rotation in one transaction, the reuse record).
// req/s = 1e9 / ns/op.
func BenchmarkOAuthTokenRefresh(b *testing.B) {
	srv := testserver.Start(b)
	srv.Register("alice", "benchmark password")
	conf := nativeClient(b, srv)
	verifier := oauth2.GenerateVerifier()
	tok, err := conf.Exchange(ctx, authorizeCode(b, newBrowser(b, srv), conf, verifier, "alice", "benchmark password"),
		oauth2.VerifierOption(verifier))
	if err != nil {
		b.Fatal(err)
	}
	rt := tok.RefreshToken
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := tokenForm(b, srv, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {conf.ClientID}})
		if r.Status != http.StatusOK {
			b.Fatalf("refresh: %d %s", r.Status, r.Raw)
		}
		rt = r.str("refresh_token")
	}
}

// BenchmarkOAuthTokenRefreshParallel is the token endpoint's throughput:
// 16 devices of one client refreshing at once, each rotating its own
// refresh token; commits of concurrent requests share fsyncs.
func BenchmarkOAuthTokenRefreshParallel(b *testing.B) {
	srv := testserver.Start(b)
	srv.Register("alice", "benchmark password")
	conf := nativeClient(b, srv)
	sessions := make(chan string, 16)
	for i := 0; i < cap(sessions); i++ {
		verifier := oauth2.GenerateVerifier()
		tok, err := conf.Exchange(ctx, authorizeCode(b, newBrowser(b, srv), conf, verifier, "alice", "benchmark password"),
			oauth2.VerifierOption(verifier))
		if err != nil {
			b.Fatal(err)
		}
		sessions <- tok.RefreshToken
	}
	b.SetParallelism(8) // 16 goroutines on 2 CPUs
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rt := <-sessions
		defer func() { sessions <- rt }()
		for pb.Next() {
			r, err := tryDo(srv, req{Method: http.MethodPost, Path: "/_tessera/oauth2/token",
				Body:    url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {conf.ClientID}}.Encode(),
				Headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}})
			if err != nil || r.Status != http.StatusOK {
				b.Errorf("refresh: %v %d %s", err, r.Status, r.Raw)
				return
			}
			rt = r.str("refresh_token")
		}
	})
}
