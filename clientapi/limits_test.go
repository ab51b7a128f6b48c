package clientapi_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// rawConn is a plain TCP connection to the server's client listener, for
// what net/http's client will not do: declare a body and not send it.
func rawConn(t *testing.T, srv *testserver.Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawResponse reads one response from c, failing the test if none comes
// within timeout. It returns the response with its body read, and whether
// the server then closed the connection.
func rawResponse(t *testing.T, c net.Conn, br *bufio.Reader, timeout time.Duration) (*http.Response, []byte, bool) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response within %v: %v", timeout, err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	_ = res.Body.Close()
	// After the response, the server hangs up (EOF, or a reset if it
	// still had unread bytes of ours) rather than wait for more.
	_, err = br.ReadByte()
	closed := err != nil && !isTimeout(err)
	return res, body, closed
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// wantErrcode checks a raw response's status and errcode.
func wantErrcode(t *testing.T, res *http.Response, body []byte, status int, errcode string) {
	t.Helper()
	var e struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(body, &e)
	if res.StatusCode != status || e.Errcode != errcode {
		t.Fatalf("got %d %q (%s), want %d %s", res.StatusCode, e.Errcode, body, status, errcode)
	}
}

// TestSlowBodyCutOff: a client that declares a body and then sends
// nothing, or a trickle, is answered 408 and disconnected once
// http.body_timeout passes or it falls below http.body_min_rate, rather
// than holding the connection forever. No account is needed to try.
// A body that comes in pieces, each within the timeout and fast enough
// on average, is read in full.
func TestSlowBodyCutOff(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) {
		c.HTTP.BodyTimeout = config.Duration(time.Second)
		c.HTTP.BodyMinRate = 4 << 10
	})
	const head = "POST /_matrix/client/v3/register HTTP/1.1\r\nHost: tessera\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"

	t.Run("nothing after the headers", func(t *testing.T) {
		t.Parallel()
		c := rawConn(t, srv)
		start := time.Now()
		fmt.Fprintf(c, head, 100000)
		res, body, closed := rawResponse(t, c, bufio.NewReader(c), 10*time.Second)
		wantErrcode(t, res, body, http.StatusRequestTimeout, "M_UNKNOWN")
		if !closed {
			t.Fatal("connection still open after the 408")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("answered after %v, want about 1 s", d)
		}
	})

	t.Run("a trickle", func(t *testing.T) {
		t.Parallel()
		c := rawConn(t, srv)
		fmt.Fprintf(c, head, 100000)
		stop := make(chan struct{})
		defer close(stop)
		go func() { // a byte every 100 ms: never stalls, far below the rate
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
					if _, err := c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		}()
		res, body, closed := rawResponse(t, c, bufio.NewReader(c), 10*time.Second)
		wantErrcode(t, res, body, http.StatusRequestTimeout, "M_UNKNOWN")
		if !closed {
			t.Fatal("connection still open after the 408")
		}
	})

	t.Run("in pieces, fast enough", func(t *testing.T) {
		t.Parallel()
		c := rawConn(t, srv)
		payload := []byte(`{"username":"piecemeal","password":"correct horse"}` + strings.Repeat(" ", 8<<10))
		fmt.Fprintf(c, head, len(payload))
		for chunk := range slices.Chunk(payload, 2<<10) {
			if _, err := c.Write(chunk); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
		}
		res, body, _ := rawResponse(t, c, bufio.NewReader(c), 10*time.Second)
		// The UIA challenge: the whole body was read and understood.
		if res.StatusCode != http.StatusUnauthorized || !bytes.Contains(body, []byte(`"session"`)) {
			t.Fatalf("got %d %s, want the 401 UIA challenge", res.StatusCode, body)
		}
	})
}

// TestOversizeUploadAnswered413: an upload over media.max_upload_bytes
// reaches the client as 413 M_TOO_LARGE, not as a reset connection:
// before the body when the client sends Expect: 100-continue, and
// otherwise after reading (and dropping) a bounded part of it.
func TestOversizeUploadAnswered413(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) { c.Media.MaxUploadBytes = 1 << 20 })
	token := srv.Register("alice", "correct horse").AccessToken
	const big = 64 << 20
	head := "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: tessera\r\nAuthorization: Bearer " + token +
		"\r\nContent-Type: application/octet-stream\r\nContent-Length: " + fmt.Sprint(big) + "\r\n"

	t.Run("raw, Expect 100-continue", func(t *testing.T) {
		t.Parallel()
		c := rawConn(t, srv)
		fmt.Fprint(c, head+"Expect: 100-continue\r\n\r\n")
		// The final answer comes without a 100 Continue before it, so
		// the client never sends the body.
		res, body, _ := rawResponse(t, c, bufio.NewReader(c), 10*time.Second)
		wantErrcode(t, res, body, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	})

	t.Run("raw, body sent regardless", func(t *testing.T) {
		t.Parallel()
		c := rawConn(t, srv)
		fmt.Fprint(c, head+"\r\n")
		go func() { // as a naive client does: write it all, then read
			chunk := make([]byte, 64<<10)
			for sent := 0; sent < big; sent += len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}()
		res, body, _ := rawResponse(t, c, bufio.NewReader(c), 20*time.Second)
		wantErrcode(t, res, body, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	})

	t.Run("raw, whole body written before reading", func(t *testing.T) {
		t.Parallel()
		// More than the kernel buffers, less than what the server reads and
		// drops (oversizeDiscard): it reads it all, so
		// this client's writes complete and it finds the answer.
		const size = 1<<20 + 12<<20
		c := rawConn(t, srv)
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		req := strings.Replace(head, fmt.Sprint(big), fmt.Sprint(size), 1) + "\r\n"
		if _, err := c.Write(append([]byte(req), make([]byte, size)...)); err != nil {
			t.Fatalf("writing the request: %v (the server hung up before reading it)", err)
		}
		res, body, closed := rawResponse(t, c, bufio.NewReader(c), 10*time.Second)
		wantErrcode(t, res, body, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		if !closed {
			t.Fatal("connection still open after the 413")
		}
	})

	for _, tc := range []struct {
		name          string
		expect        bool
		unknownLength bool
	}{
		{"net/http", false, false},
		{"net/http, Expect 100-continue", true, false},
		{"net/http, chunked", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
			defer client.CloseIdleConnections()
			for i := range 5 { // a race would show in some of the tries
				var body io.Reader = bytes.NewReader(make([]byte, 8<<20))
				if tc.unknownLength {
					body = io.MultiReader(body) // hides the length: chunked
				}
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/_matrix/media/v3/upload", body)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Content-Type", "application/octet-stream")
				if tc.expect {
					req.Header.Set("Expect", "100-continue")
				}
				res, err := client.Do(req)
				if err != nil {
					t.Fatalf("try %d: %v, want a 413 response", i, err)
				}
				raw, _ := io.ReadAll(res.Body)
				_ = res.Body.Close()
				wantErrcode(t, res, raw, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
			}
		})
	}
}
