package appservice

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

func TestPing(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	teapot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer hs" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte("short and stout"))
	}))
	defer teapot.Close()
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("{}")) }))
	defer ok.Close()

	str := func(s string) *string { return &s }
	c := NewClient()
	c.PingTimeout = 200 * time.Millisecond
	cases := []struct {
		name    string
		url     *string
		status  int
		errcode string
	}{
		{"ok", str(ok.URL), 0, ""},
		{"no url", nil, 400, "M_URL_NOT_SET"},
		{"empty url", str(""), 400, "M_URL_NOT_SET"},
		{"bad status", str(teapot.URL), 502, "M_BAD_STATUS"},
		{"refused", str("http://127.0.0.1:1"), 502, "M_CONNECTION_FAILED"},
		{"timeout", str(slow.URL), 504, "M_CONNECTION_TIMEOUT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Ping(context.Background(), &Registration{ID: "x", URL: tc.url, HSToken: "hs"}, "txn")
			if tc.errcode == "" {
				if err != nil {
					t.Fatalf("ping: %v", err)
				}
				return
			}
			e, isMx := mxerr.As(err)
			if !isMx || e.Status != tc.status || e.Code != tc.errcode {
				t.Fatalf("err = %v, want %d %s", err, tc.status, tc.errcode)
			}
			if tc.errcode == "M_BAD_STATUS" && (e.Extra["status"] != http.StatusTeapot || e.Extra["body"] != "short and stout") {
				t.Fatalf("M_BAD_STATUS extra = %v", e.Extra)
			}
		})
	}
}
