package clientapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/lkpeer"
	"github.com/tessera-hs/tessera/internal/lkrelay"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestCallsMedia is the end-to-end proof of the embedded SFU: N users of
// one Matrix room get LiveKit tokens exactly as Element Call does (OpenID
// token, then POST <livekit_service_url>/get_token), join the SFU through
// our reverse proxy with LiveKit's Go SDK, each publishes Opus audio and
// VP8 video, and every participant must receive RTP of both kinds from
// every other one.
func TestCallsMedia(t *testing.T) {
	if testing.Short() {
		t.Skip("media test skipped in -short mode")
	}
	lksdk.SetLogger(protoLogger.GetLogger()) // LiveKit's level (warn), not stdlog chatter
	srv := testserver.Start(t, testserver.Calls())
	for _, n := range []int{2, 6} {
		t.Run(fmt.Sprintf("%dusers", n), func(t *testing.T) { callsMediaRun(t, srv, n) })
	}
}

const mediaTimeout = 20 * time.Second

// mediaPeer is one call participant.
type mediaPeer struct {
	s        session
	identity string
	url, jwt string // from get_token
	peer     *lkpeer.Peer

	start     time.Time     // join request (OpenID token request)
	tokenAt   time.Duration // token in hand
	joinStart time.Duration // connecting to the SFU
	joinedAt  time.Duration // connected and published
}

func callsMediaRun(t *testing.T, srv *testserver.Server, n int) {
	peers := make([]*mediaPeer, n)
	for i := range peers {
		peers[i] = &mediaPeer{s: registerUser(t, srv, fmt.Sprintf("rtc%d_%d", n, i), "password1")}
	}
	roomID := adCreateRoom(t, srv, peers[0].s, map[string]any{"preset": "public_chat"})
	for _, p := range peers[1:] {
		adJoin(t, srv, p.s, roomID)
	}
	// Element Call's discovery: the focus from rtc/transports.
	tr := get(t, srv, "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", peers[0].s.AccessToken).expect(t, http.StatusOK, "")
	foci, _ := tr.Body["rtc_transports"].([]any)
	if len(foci) != 1 {
		t.Fatalf("rtc_transports: %s", tr.Raw)
	}
	serviceURL, _ := foci[0].(map[string]any)["livekit_service_url"].(string)
	if serviceURL == "" {
		t.Fatalf("no livekit_service_url in %s", tr.Raw)
	}

	shim := httptest.NewServer(lkrelay.PublishAfterTrackPublished())
	defer shim.Close()
	defer func() {
		for _, p := range peers {
			if p.peer != nil {
				p.peer.Close()
			}
		}
	}()

	for i, p := range peers {
		p.identity = calls.IdentityFor(p.s.UserID, p.s.DeviceID, fmt.Sprintf("member%d", i))
	}
	// Members join one after another, each through Element Call's whole
	// flow, publishing before subscribing. (Concurrent first get_token
	// requests for a new room trip a data race inside livekit-server
	// v1.13.5: LocalStore.LoadRoom hands out its stored *livekit.Room,
	// which a second CreateRoom writes while the first's rtc.NewRoom
	// clones it. See also lkrelay.PublishAfterTrackPublished.)
	for i, p := range peers {
		member := fmt.Sprintf("member%d", i)
		must(t, p.token(srv, serviceURL, roomID, member), p.s.UserID+": get_token")
		signalURL := "ws://" + strings.TrimPrefix(shim.URL, "http://") + "/?upstream=" + url.QueryEscape(p.url)
		p.joinStart = time.Since(p.start)
		peer, err := lkpeer.Join(signalURL, p.jwt, true, mediaTimeout)
		must(t, err, p.s.UserID+": join")
		p.peer = peer
		p.joinedAt = time.Since(p.start)
		if got := peer.Room.LocalParticipant.Identity(); got != p.identity {
			t.Fatalf("%s: identity %q, want %q", p.s.UserID, got, p.identity)
		}
	}

	failed := false
	for i, p := range peers {
		var want []string
		for _, q := range peers {
			if q != p {
				want = append(want, lkpeer.Key(q.identity, webrtc.RTPCodecTypeAudio), lkpeer.Key(q.identity, webrtc.RTPCodecTypeVideo))
			}
		}
		if missing := p.peer.Wait(want, mediaTimeout); len(missing) > 0 {
			failed = true
			sort.Strings(missing)
			t.Errorf("participant %d (%s) received no RTP within %v from: %s", i, p.s.UserID, mediaTimeout, strings.Join(missing, ", "))
			continue
		}
		// First packets, since this participant's join request.
		var firstAny, all time.Duration
		for _, k := range want {
			d, _ := p.peer.First(k)
			d += p.joinStart
			if firstAny == 0 || d < firstAny {
				firstAny = d
			}
			all = max(all, d)
		}
		t.Logf("n=%d participant %d: token %v, connected and published %v, first RTP %v, all %d streams %v (from join request)",
			n, i, p.tokenAt.Round(time.Millisecond), p.joinedAt.Round(time.Millisecond),
			firstAny.Round(time.Millisecond), len(want), all.Round(time.Millisecond))
	}
	if failed {
		t.FailNow()
	}
}

// token is the first half of Element Call's join: an OpenID token, then
// POST <livekit_service_url>/get_token.
func (p *mediaPeer) token(srv *testserver.Server, serviceURL, roomID, memberID string) error {
	p.start = time.Now()
	var oid map[string]any
	if err := postJSON(srv.URL+v3+"/user/"+url.PathEscape(p.s.UserID)+"/openid/request_token", p.s.AccessToken, map[string]any{}, &oid); err != nil {
		return fmt.Errorf("openid: %w", err)
	}
	var tok struct{ URL, JWT string }
	err := postJSON(serviceURL+"/get_token", "", map[string]any{
		"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": oid,
		"member": map[string]any{"id": memberID, "claimed_user_id": p.s.UserID, "claimed_device_id": p.s.DeviceID},
	}, &tok)
	if err != nil {
		return fmt.Errorf("get_token: %w", err)
	}
	if !strings.HasSuffix(tok.URL, calls.ProxyPrefix) || tok.JWT == "" {
		return fmt.Errorf("get_token answered url %q jwt %q", tok.URL, tok.JWT)
	}
	p.url, p.jwt = tok.URL, tok.JWT
	p.tokenAt = time.Since(p.start)
	return nil
}

// postJSON is a plain HTTP POST for use off the test goroutine.
func postJSON(u, accessToken string, body, out any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if accessToken != "" {
		req.Header.Set("Authorization", "Bearer "+accessToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}
