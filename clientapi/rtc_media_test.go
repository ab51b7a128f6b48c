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
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/tessera-hs/tessera/calls"
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

// The SFU parses VP8 payloads to find key frames (a subscriber's video
// starts at one), so every video sample is a tiny valid 8x8 key frame
// (the one livekit-server itself uses as a placeholder).
var vp8KeyFrame8x8 = []byte{
	0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x08, 0x00,
	0x08, 0x00, 0x00, 0x47, 0x08, 0x85, 0x85, 0x88,
	0x85, 0x84, 0x88, 0x02, 0x02, 0x00, 0x0c, 0x0d,
	0x60, 0x00, 0xfe, 0xff, 0xab, 0x50, 0x80,
}

// opusSilence is a 20 ms Opus frame (CELT silence).
var opusSilence = []byte{0xf8, 0xff, 0xfe}

const mediaTimeout = 20 * time.Second

// mediaPeer is one call participant and what it has received.
type mediaPeer struct {
	s         session
	identity  string
	url, jwt  string // from get_token
	signalURL string // url, through lkrelay.PublishAfterTrackPublished
	room      *lksdk.Room
	tracks    []*lksdk.LocalTrack

	start     time.Time // join request (OpenID token request)
	tokenAt   time.Duration
	joinedAt  time.Duration
	published time.Duration

	mu          sync.Mutex
	subscribing bool                     // published; subscribe to what appears
	first       map[string]time.Duration // "identity/kind" → first packet, since start
	got         chan struct{}            // closed once every expected stream arrived
	want        int
}

func (p *mediaPeer) gotPacket(from string, kind webrtc.RTPCodecType) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := from + "/" + kind.String()
	if _, ok := p.first[k]; ok {
		return
	}
	p.first[k] = time.Since(p.start)
	if len(p.first) == p.want {
		close(p.got)
	}
}

func callsMediaRun(t *testing.T, srv *testserver.Server, n int) {
	peers := make([]*mediaPeer, n)
	for i := range peers {
		peers[i] = &mediaPeer{
			s:     registerUser(t, srv, fmt.Sprintf("rtc%d_%d", n, i), "password1"),
			first: map[string]time.Duration{},
			got:   make(chan struct{}),
			want:  2 * (n - 1),
		}
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
	stop := make(chan struct{})
	var writers sync.WaitGroup
	defer func() {
		close(stop)
		writers.Wait()
		for _, p := range peers {
			if p.room != nil {
				p.room.Disconnect()
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
		p.signalURL = "ws://" + strings.TrimPrefix(shim.URL, "http://") + "/?upstream=" + url.QueryEscape(p.url)
		must(t, p.join(stop, &writers), p.s.UserID+": join")
	}

	deadline := time.After(mediaTimeout)
	for _, p := range peers {
		select {
		case <-p.got:
		case <-deadline:
		}
	}
	failed := false
	for i, p := range peers {
		p.mu.Lock()
		var missing []string
		var firstAny, all time.Duration
		for _, q := range peers {
			if q == p {
				continue
			}
			for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
				d, ok := p.first[q.identity+"/"+kind.String()]
				if !ok {
					missing = append(missing, q.s.UserID+" "+kind.String())
					continue
				}
				if firstAny == 0 || d < firstAny {
					firstAny = d
				}
				all = max(all, d)
			}
		}
		p.mu.Unlock()
		if len(missing) > 0 {
			failed = true
			sort.Strings(missing)
			t.Errorf("participant %d (%s) received no RTP within %v from: %s", i, p.s.UserID, mediaTimeout, strings.Join(missing, ", "))
			continue
		}
		t.Logf("n=%d participant %d: token %v, connected %v, published %v, first RTP %v, all %d streams %v (from join request)",
			n, i, p.tokenAt.Round(time.Millisecond), p.joinedAt.Round(time.Millisecond), p.published.Round(time.Millisecond),
			firstAny.Round(time.Millisecond), p.want, all.Round(time.Millisecond))
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

// join is the second half: connect to the URL get_token returned, publish
// a microphone and a camera track, subscribe to everything.
func (p *mediaPeer) join(stop <-chan struct{}, writers *sync.WaitGroup) error {
	cb := &lksdk.RoomCallback{ParticipantCallback: lksdk.ParticipantCallback{
		OnTrackSubscribed: func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
			from, kind := rp.Identity(), track.Kind()
			go func() {
				for {
					if _, _, err := track.ReadRTP(); err != nil {
						return
					}
					p.gotPacket(from, kind)
				}
			}()
		},
		OnTrackPublished: func(pub *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
			p.mu.Lock()
			subscribing := p.subscribing
			p.mu.Unlock()
			if subscribing {
				_ = pub.SetSubscribed(true)
			}
		},
	}}
	room, err := lksdk.ConnectToRoomWithToken(p.signalURL, p.jwt, cb, lksdk.WithAutoSubscribe(false), lksdk.WithConnectTimeout(mediaTimeout))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", p.url, err)
	}
	p.room = room
	p.joinedAt = time.Since(p.start)
	if room.LocalParticipant.Identity() != p.identity {
		return fmt.Errorf("identity %q, want %q", room.LocalParticipant.Identity(), p.identity)
	}

	audio, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
	if err != nil {
		return err
	}
	video, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000})
	if err != nil {
		return err
	}
	p.tracks = []*lksdk.LocalTrack{audio, video}
	// Publish first, then subscribe to what is there and what appears.
	if _, err := room.LocalParticipant.PublishTrack(video, &lksdk.TrackPublicationOptions{Name: "camera", Source: livekit.TrackSource_CAMERA, VideoWidth: 8, VideoHeight: 8}); err != nil {
		return fmt.Errorf("publish video: %w", err)
	}
	if _, err := room.LocalParticipant.PublishTrack(audio, &lksdk.TrackPublicationOptions{Name: "mic", Source: livekit.TrackSource_MICROPHONE}); err != nil {
		return fmt.Errorf("publish audio: %w", err)
	}
	p.published = time.Since(p.start)
	p.mu.Lock()
	p.subscribing = true
	p.mu.Unlock()
	for _, rp := range room.GetRemoteParticipants() {
		for _, pub := range rp.TrackPublications() {
			if rpub, ok := pub.(*lksdk.RemoteTrackPublication); ok {
				if err := rpub.SetSubscribed(true); err != nil {
					return fmt.Errorf("subscribe to %s: %w", rp.Identity(), err)
				}
			}
		}
	}
	writers.Add(2)
	go writeSamples(audio, opusSilence, 20*time.Millisecond, stop, writers)
	go writeSamples(video, vp8KeyFrame8x8, time.Second/30, stop, writers)
	return nil
}

// writeSamples writes sample every frame period until stop: real-time
// synthetic media (the SFU forwards RTP without decoding it).
func writeSamples(track *lksdk.LocalTrack, sample []byte, every time.Duration, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			_ = track.WriteSample(media.Sample{Data: sample, Duration: every}, nil)
		}
	}
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
