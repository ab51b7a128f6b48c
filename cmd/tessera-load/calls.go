package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/tessera-hs/tessera/internal/lkrelay"
)

// callsScenario: P users of one Matrix room join a MatrixRTC call the way
// Element Call does (rtc/transports, an OpenID token, POST
// <livekit_service_url>/get_token), connect to the SFU with LiveKit's Go
// SDK, each publish one synthetic VP8 video track at -bitrate and
// subscribe to every other. It measures, per participant, the latency from
// its join request (the OpenID token request) to the first RTP packet it
// receives, and over -d the bitrate it receives. "calls: media flowing"
// and "calls: done" on stderr mark the measured window, in which to sample
// the server's process (docs/calls-bench.sh).
type callsScenario struct {
	participants int
	dur          time.Duration
	bitrate      int
	fps          int
}

func (s *callsScenario) addFlags(fs *flag.FlagSet) {
	s.dur = 20 * time.Second
	fs.IntVar(&s.participants, "p", 4, "participants, each publishing one video track")
	fs.Var(durationFlag{&s.dur}, "d", "how long to measure once media flows (seconds, or a duration)")
	fs.IntVar(&s.bitrate, "bitrate", 500_000, "each video track's bitrate, in bit/s (synthetic VP8)")
	fs.IntVar(&s.fps, "fps", 30, "video frames per second")
}

func (s *callsScenario) check() error {
	if s.participants < 1 || s.participants > 100 {
		return errors.New("-p must be between 1 and 100")
	}
	if s.dur <= 0 {
		return errors.New("-d must be positive")
	}
	if s.fps < 1 || s.fps > 120 {
		return errors.New("-fps must be between 1 and 120")
	}
	if s.bitrate < 8*len(vp8KeyFrame8x8)*s.fps || s.bitrate > 50_000_000 {
		return fmt.Errorf("-bitrate must be between %d and 50000000", 8*len(vp8KeyFrame8x8)*s.fps)
	}
	return nil
}

func (s *callsScenario) conns() int { return s.participants + syncParallel }

// callsJoinTimeout bounds one participant's connection to the SFU, and the
// wait for media from everyone once all have joined.
const callsJoinTimeout = 20 * time.Second

type callsParticipant struct {
	Index      int     `json:"index"`
	UserID     string  `json:"user_id"`
	TokenMS    float64 `json:"token_ms"`     // join request → get_token answered
	ConnectMS  float64 `json:"connect_ms"`   // → connected to the SFU
	PublishMS  float64 `json:"publish_ms"`   // → video track published
	FirstRTPMS float64 `json:"first_rtp_ms"` // → first RTP packet received (0: none)
	Streams    int     `json:"streams"`      // remote video tracks receiving RTP by the window's end
	RecvKbps   float64 `json:"recv_kbps"`    // received over the window, RTP payload + headers
	RecvPkts   int64   `json:"recv_packets"`
}

type callsReport struct {
	Scenario       string             `json:"scenario"`
	HS             string             `json:"hs"`
	Participants   int                `json:"participants"`
	BitrateBPS     int                `json:"bitrate_bps"`
	FPS            int                `json:"fps"`
	FrameBytes     int                `json:"frame_bytes"`
	Seconds        float64            `json:"seconds"`
	FirstRTP       *latencyStats      `json:"first_rtp,omitempty"` // over participants 2..P, who join a call with media in it
	RecvKbpsMean   float64            `json:"recv_kbps_mean"`
	RecvKbpsMin    float64            `json:"recv_kbps_min"`
	ExpectedKbps   float64            `json:"expected_kbps"` // (P-1) × -bitrate
	Missing        int                `json:"missing_streams"`
	Began          string             `json:"began"`
	Ended          string             `json:"ended"`
	PerParticipant []callsParticipant `json:"per_participant"`
}

func (r *callsReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "calls: %d participants, each publishing VP8 at %d kbit/s (%d fps, %d-byte frames), measured for %s\n",
		r.Participants, r.BitrateBPS/1000, r.FPS, r.FrameBytes, fmtSeconds(r.Seconds))
	if r.FirstRTP != nil {
		fmt.Fprintf(&b, "  first RTP  %s (join request to first received packet, participants 2..P)\n", r.FirstRTP)
	}
	fmt.Fprintf(&b, "  received   mean %.0f kbit/s, min %.0f kbit/s per participant (expected %.0f); %d streams missing\n",
		r.RecvKbpsMean, r.RecvKbpsMin, r.ExpectedKbps, r.Missing)
	for _, p := range r.PerParticipant {
		fmt.Fprintf(&b, "  #%d %s: token %.0f ms, connected %.0f ms, published %.0f ms, first RTP %.0f ms, %d streams, %.0f kbit/s\n",
			p.Index, p.UserID, p.TokenMS, p.ConnectMS, p.PublishMS, p.FirstRTPMS, p.Streams, p.RecvKbps)
	}
	fmt.Fprintf(&b, "  window     %s to %s\n", r.Began, r.Ended)
	return b.String()
}

// vp8KeyFrame8x8 is a valid 8x8 VP8 key frame (the placeholder
// livekit-server itself uses). The SFU parses VP8 payloads to find key
// frames (a subscriber's video starts at one) but does not decode them, so
// frames are this key frame, or an inter frame tag, padded to size.
var vp8KeyFrame8x8 = []byte{
	0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x08, 0x00,
	0x08, 0x00, 0x00, 0x47, 0x08, 0x85, 0x85, 0x88,
	0x85, 0x84, 0x88, 0x02, 0x02, 0x00, 0x0c, 0x0d,
	0x60, 0x00, 0xfe, 0xff, 0xab, 0x50, 0x80,
}

type callsPeer struct {
	i         int
	u         user
	start     time.Time
	url, jwt  string
	room      *lksdk.Room
	video     *lksdk.LocalTrack
	pli       atomic.Bool // a key frame was asked for
	tokenAt   time.Duration
	joinedAt  time.Duration
	published time.Duration

	mu          sync.Mutex
	subscribing bool
	firstRTP    time.Duration
	from        map[string]bool // identities whose RTP arrived
	bytes, pkts atomic.Int64
}

func (s *callsScenario) run(ctx context.Context, e *env) (report, error) {
	lksdk.SetLogger(protoLogger.GetLogger())
	names := make([]string, s.participants)
	for i := range names {
		names[i] = fmt.Sprintf("call%d", i)
	}
	e.logf("setup: registering %d users", len(names))
	users, err := e.users.registerAll(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	roomID, err := createRoom(ctx, e.c, users[0].AccessToken, map[string]any{"preset": "public_chat"})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	for _, u := range users[1:] {
		if err := joinRoom(ctx, e.c, u.AccessToken, roomID); err != nil {
			return nil, fmt.Errorf("setup: %w", err)
		}
	}
	var tr struct {
		Transports []struct {
			Type       string `json:"type"`
			ServiceURL string `json:"livekit_service_url"`
		} `json:"rtc_transports"`
	}
	if err := e.c.do(ctx, http.MethodGet, "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", nil,
		users[0].AccessToken, nil, &tr); err != nil {
		return nil, fmt.Errorf("setup: rtc transports (are calls enabled?): %w", err)
	}
	if len(tr.Transports) == 0 || tr.Transports[0].ServiceURL == "" {
		return nil, errors.New("setup: rtc/transports lists no livekit_service_url")
	}
	serviceURL := tr.Transports[0].ServiceURL

	relay, err := startSignalRelay()
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	defer relay.Close()

	frameBytes := s.bitrate / 8 / s.fps
	stop := make(chan struct{})
	var writers sync.WaitGroup
	peers := make([]*callsPeer, len(users))
	defer func() {
		close(stop)
		writers.Wait()
		for _, p := range peers {
			if p != nil && p.room != nil {
				p.room.Disconnect()
			}
		}
	}()
	// One after another: concurrent first get_token requests for a new
	// room trip a data race in livekit-server (see clientapi's media test).
	for i, u := range users {
		p := &callsPeer{i: i, u: u, from: map[string]bool{}}
		peers[i] = p
		if err := p.token(ctx, e, serviceURL, roomID, fmt.Sprintf("member%d", i)); err != nil {
			return nil, fmt.Errorf("participant %d: %w", i, err)
		}
		signal := "ws://" + relay.Addr().String() + "/?upstream=" + url.QueryEscape(p.url)
		if err := p.join(signal); err != nil {
			return nil, fmt.Errorf("participant %d: %w", i, err)
		}
		writers.Add(1)
		go p.writeVideo(frameBytes, time.Second/time.Duration(s.fps), stop, &writers)
		e.logf("setup: participant %d joined and publishing (%v after its join request)", i, p.published.Round(time.Millisecond))
	}

	// Wait for every stream (or give up after a while), then measure.
	want := len(peers) - 1
	deadline := time.Now().Add(callsJoinTimeout)
	for time.Now().Before(deadline) {
		all := true
		for _, p := range peers {
			p.mu.Lock()
			if len(p.from) < want {
				all = false
			}
			p.mu.Unlock()
		}
		if all {
			break
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
	}
	b0 := make([]int64, len(peers))
	p0 := make([]int64, len(peers))
	for i, p := range peers {
		b0[i], p0[i] = p.bytes.Load(), p.pkts.Load()
	}
	began := time.Now()
	e.logf("calls: media flowing")
	select {
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	case <-time.After(s.dur):
	}
	elapsed := time.Since(began)
	rep := &callsReport{
		Scenario: "calls", HS: e.hs, Participants: len(peers), BitrateBPS: s.bitrate, FPS: s.fps,
		FrameBytes: frameBytes, Seconds: seconds(elapsed), ExpectedKbps: float64(want) * float64(s.bitrate) / 1000,
		Began: began.UTC().Format(time.RFC3339Nano), Ended: time.Now().UTC().Format(time.RFC3339Nano),
	}
	var lat []time.Duration
	var sum float64
	for i, p := range peers {
		db, dp := p.bytes.Load()-b0[i], p.pkts.Load()-p0[i]
		p.mu.Lock()
		cp := callsParticipant{
			Index: i, UserID: p.u.UserID, TokenMS: ms(p.tokenAt), ConnectMS: ms(p.joinedAt), PublishMS: ms(p.published),
			FirstRTPMS: ms(p.firstRTP), Streams: len(p.from),
			RecvKbps: round(float64(db)*8/1000/elapsed.Seconds(), 1), RecvPkts: dp,
		}
		p.mu.Unlock()
		rep.Missing += want - cp.Streams
		// The first participant's first packet waits for the second to
		// join; only later ones join a call with media already in it.
		if i > 0 && p.firstRTP > 0 {
			lat = append(lat, p.firstRTP)
		}
		sum += cp.RecvKbps
		if i == 0 || cp.RecvKbps < rep.RecvKbpsMin {
			rep.RecvKbpsMin = cp.RecvKbps
		}
		rep.PerParticipant = append(rep.PerParticipant, cp)
	}
	rep.RecvKbpsMean = round(sum/float64(len(peers)), 1)
	if len(lat) > 0 {
		st := summarize(lat)
		rep.FirstRTP = &st
	}
	e.logf("calls: done")
	if rep.Missing > 0 {
		return rep, fmt.Errorf("%d of %d video streams delivered no RTP", rep.Missing, len(peers)*want)
	}
	return rep, nil
}

// token is the first half of Element Call's join: an OpenID token, then
// POST <livekit_service_url>/get_token.
func (p *callsPeer) token(ctx context.Context, e *env, serviceURL, roomID, memberID string) error {
	p.start = time.Now()
	var oid map[string]any
	if err := e.c.do(ctx, http.MethodPost, clientV3+"/user/"+url.PathEscape(p.u.UserID)+"/openid/request_token",
		nil, p.u.AccessToken, map[string]any{}, &oid); err != nil {
		return fmt.Errorf("openid: %w", err)
	}
	body, _ := json.Marshal(map[string]any{
		"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": oid,
		"member": map[string]any{"id": memberID, "claimed_user_id": p.u.UserID, "claimed_device_id": p.u.DeviceID},
	})
	rctx, cancel := context.WithTimeout(ctx, callsJoinTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, strings.TrimSuffix(serviceURL, "/")+"/get_token", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("get_token: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get_token: HTTP %d: %s", resp.StatusCode, raw)
	}
	var tok struct{ URL, JWT string }
	if err := json.Unmarshal(raw, &tok); err != nil || tok.URL == "" || tok.JWT == "" {
		return fmt.Errorf("get_token: unexpected answer %s", raw)
	}
	p.url, p.jwt = tok.URL, tok.JWT
	p.tokenAt = time.Since(p.start)
	return nil
}

func (p *callsPeer) gotPacket(from string, n int) {
	p.bytes.Add(int64(n))
	p.pkts.Add(1)
	p.mu.Lock()
	if !p.from[from] {
		p.from[from] = true
		if p.firstRTP == 0 {
			p.firstRTP = time.Since(p.start)
		}
	}
	p.mu.Unlock()
}

// join connects to the SFU, publishes one video track, and subscribes to
// every other participant's tracks, present and future.
func (p *callsPeer) join(signalURL string) error {
	cb := &lksdk.RoomCallback{ParticipantCallback: lksdk.ParticipantCallback{
		OnTrackSubscribed: func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
			from := rp.Identity()
			go func() {
				buf := make([]byte, 1500)
				for {
					n, _, err := track.Read(buf)
					if err != nil {
						return
					}
					p.gotPacket(from, n)
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
	room, err := lksdk.ConnectToRoomWithToken(signalURL, p.jwt, cb, lksdk.WithAutoSubscribe(false),
		lksdk.WithConnectTimeout(callsJoinTimeout))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", p.url, err)
	}
	p.room = room
	p.joinedAt = time.Since(p.start)
	video, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
		lksdk.WithRTCPHandler(func(pkt rtcp.Packet) {
			switch pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				p.pli.Store(true)
			}
		}))
	if err != nil {
		return err
	}
	p.video = video
	if _, err := room.LocalParticipant.PublishTrack(video, &lksdk.TrackPublicationOptions{
		Name: "camera", Source: livekit.TrackSource_CAMERA, VideoWidth: 8, VideoHeight: 8,
	}); err != nil {
		return fmt.Errorf("publish video: %w", err)
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
	return nil
}

// writeVideo writes a frame of size bytes every period until stop: a key
// frame first, every second and when a subscriber asks for one (PLI/FIR),
// inter frames otherwise.
func (p *callsPeer) writeVideo(size int, every time.Duration, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	key := make([]byte, size)
	copy(key, vp8KeyFrame8x8)
	inter := make([]byte, size)
	copy(inter, vp8KeyFrame8x8[:3])
	inter[0] |= 0x01 // frame tag bit 0 set: an inter frame
	perSecond := int(time.Second / every)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		frame := inter
		if n%perSecond == 0 || p.pli.Swap(false) {
			frame = key
		}
		_ = p.video.WriteSample(media.Sample{Data: frame, Duration: every}, nil)
	}
}

// signalRelay relays LiveKit signalling through
// lkrelay.PublishAfterTrackPublished: a publisher offer waits until the
// SFU has published every announced track, as livekit-client does. The Go
// SDK offers without waiting, which exposes a data race inside
// livekit-server (see there).
type signalRelay struct {
	net.Listener
	srv *http.Server
}

func (r *signalRelay) Close() error { return r.srv.Close() }

func startSignalRelay() (*signalRelay, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: lkrelay.PublishAfterTrackPublished(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return &signalRelay{Listener: l, srv: srv}, nil
}
