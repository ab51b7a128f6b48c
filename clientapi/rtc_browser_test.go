//go:build linux

package clientapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/lkrelay"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// browserDir holds the call page and package.json pinning livekit-client;
// .ci/run installs Debian's chromium and runs npm ci there.
const browserDir = "testdata/browser"

const browserTimeout = 60 * time.Second

// browserReport is what call.html POSTs to /report.
type browserReport struct {
	Name   string `json:"name"`
	Event  string `json:"event"` // connected, published, subscribed, frames, error, log
	MS     int    `json:"ms"`    // since the page started
	Detail string `json:"detail"`
}

// TestCallsBrowser is TestCallsMedia with real clients: two headless
// Chromium instances run livekit-client (the SDK Element Call uses) with
// Chromium's fake camera and microphone, join the embedded SFU through
// our proxy with tokens from our get_token endpoint, and each must decode
// and present video frames from the other.
func TestCallsBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	chromium := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			chromium = p
			break
		}
	}
	// Without chromium or the bundle the test skips on a developer's
	// machine, but fails in CI (missingTool).
	missing := missingTool(t)
	if chromium == "" {
		missing("chromium not installed (.ci/run installs Debian's chromium)")
	}
	bundle := filepath.Join(browserDir, "node_modules", "livekit-client", "dist", "livekit-client.umd.js")
	if _, err := os.Stat(bundle); err != nil {
		missing("livekit-client bundle missing (run npm ci in clientapi/%s): %v", browserDir, err)
	}

	srv := testserver.Start(t, testserver.Calls())
	peers := make([]*mediaPeer, 2)
	for i := range peers {
		peers[i] = &mediaPeer{s: registerUser(t, srv, fmt.Sprintf("browser%d", i), "password1")}
	}
	roomID := adCreateRoom(t, srv, peers[0].s, map[string]any{"preset": "public_chat"})
	adJoin(t, srv, peers[1].s, roomID)
	tr := get(t, srv, "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", peers[0].s.AccessToken).expect(t, http.StatusOK, "")
	foci, _ := tr.Body["rtc_transports"].([]any)
	if len(foci) != 1 {
		t.Fatalf("rtc_transports: %s", tr.Raw)
	}
	serviceURL, _ := foci[0].(map[string]any)["livekit_service_url"].(string)
	if serviceURL == "" {
		t.Fatalf("no livekit_service_url in %s", tr.Raw)
	}
	// Tokens one after another (concurrent first get_token requests for a
	// new room race inside livekit-server v1.13.5; see callsMediaRun).
	for i, p := range peers {
		member := fmt.Sprintf("browser%d", i)
		p.identity = calls.IdentityFor(p.s.UserID, p.s.DeviceID, member)
		must(t, p.token(srv, serviceURL, roomID, member), p.s.UserID+": get_token")
	}

	// The page, the bundle and the report endpoint, all on one origin
	// (http://127.0.0.1 is a secure context, so getUserMedia works).
	reports := make(chan browserReport, 256)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /call.html", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(browserDir, "call.html"))
	})
	mux.HandleFunc("GET /livekit-client.umd.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, bundle)
	})
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		var rep browserReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case reports <- rep:
		default:
		}
	})
	page := httptest.NewServer(mux)
	defer page.Close()

	logs := make([]*lockedBuffer, len(peers))
	deadline := time.After(browserTimeout)
	frames := map[string]browserReport{}
	// wait reads reports until name's event arrives; it fails the test on
	// an error report or the deadline.
	wait := func(name, event string) browserReport {
		t.Helper()
		for {
			select {
			case rep := <-reports:
				t.Logf("%s +%dms %s %s", rep.Name, rep.MS, rep.Event, rep.Detail)
				switch {
				case rep.Event == "error":
					dumpBrowserLogs(t, logs)
					t.Fatalf("%s: %s", rep.Name, rep.Detail)
				case rep.Event == "frames":
					frames[rep.Name] = rep
				}
				if rep.Name == name && rep.Event == event {
					return rep
				}
			case <-deadline:
				dumpBrowserLogs(t, logs)
				t.Fatalf("no %q report from %s within %v (got frames from: %v)", event, name, browserTimeout, keys(frames))
			}
		}
	}

	// Signalling goes through lkrelay.PublishAfterTrackPublished (see there).
	shim := httptest.NewServer(lkrelay.PublishAfterTrackPublished())
	defer shim.Close()
	// Staggered: the second browser starts once the first has published,
	// so the two never race on the room's creation or on TrackPublished.
	for i, p := range peers {
		name := fmt.Sprintf("browser%d", i)
		signalURL := "ws://" + strings.TrimPrefix(shim.URL, "http://") + "/?upstream=" + url.QueryEscape(p.url)
		q := url.Values{"url": {signalURL}, "token": {p.jwt}, "name": {name}}
		logs[i] = startChromium(t, chromium, page.URL+"/call.html?"+q.Encode())
		wait(name, "published")
	}
	for i, p := range peers {
		name := fmt.Sprintf("browser%d", i)
		rep, ok := frames[name]
		if !ok {
			rep = wait(name, "frames")
		}
		var got struct {
			From          string
			Width, Height int
			RemoteAudio   bool
		}
		if err := json.Unmarshal([]byte(rep.Detail), &got); err != nil {
			t.Fatalf("%s: frames report %q: %v", name, rep.Detail, err)
		}
		other := peers[1-i]
		if got.From != other.identity {
			t.Errorf("%s decoded video from %q, want %q", name, got.From, other.identity)
		}
		if got.Width <= 0 || got.Height <= 0 {
			t.Errorf("%s: decoded frames are %dx%d", name, got.Width, got.Height)
		}
		t.Logf("%s (%s): %dx%d video frames from %s decoded %dms after page load (remote audio subscribed: %v)",
			name, p.s.UserID, got.Width, got.Height, other.s.UserID, rep.MS, got.RemoteAudio)
	}
}

// startChromium runs headless Chromium on pageURL until the test ends,
// then kills its whole process group.
func startChromium(t *testing.T, chromium, pageURL string) *lockedBuffer {
	t.Helper()
	profile := t.TempDir()
	cmd := exec.Command(chromium,
		"--headless=new",
		"--no-sandbox",
		"--use-fake-device-for-media-stream",
		"--use-fake-ui-for-media-stream",
		"--autoplay-policy=no-user-gesture-required",
		"--user-data-dir="+profile,
		"--no-first-run",
		"--disable-gpu",
		"--disable-dev-shm-usage",
		"--disable-extensions",
		"--disable-features=WebRtcHideLocalIpsWithMdns",
		"--enable-logging=stderr",
		pageURL,
	)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// Registered after TempDir, so it runs before the profile is removed.
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	return out
}

func dumpBrowserLogs(t *testing.T, logs []*lockedBuffer) {
	t.Helper()
	for i, l := range logs {
		if l == nil {
			continue
		}
		s := l.String()
		if len(s) > 8000 {
			s = "…" + s[len(s)-8000:]
		}
		t.Logf("chromium %d output:\n%s", i, s)
	}
}

func keys(m map[string]browserReport) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// lockedBuffer collects a child process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
