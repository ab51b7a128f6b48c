// Package lkpeer is a LiveKit call participant for tests: it joins a room
// on an SFU with LiveKit's Go SDK, may publish synthetic Opus audio and
// VP8 video in real time, subscribes to everything others publish, and
// records when the first RTP packet of each remote track arrived. It is
// client-side code, as a Matrix client's call stack would be.
package lkpeer

import (
	"fmt"
	"sync"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

// VP8KeyFrame8x8 is a tiny valid VP8 key frame (the placeholder
// livekit-server itself uses): the SFU parses VP8 payloads to find key
// frames, and a subscriber's video starts at one.
var VP8KeyFrame8x8 = []byte{
	0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x08, 0x00,
	0x08, 0x00, 0x00, 0x47, 0x08, 0x85, 0x85, 0x88,
	0x85, 0x84, 0x88, 0x02, 0x02, 0x00, 0x0c, 0x0d,
	0x60, 0x00, 0xfe, 0xff, 0xab, 0x50, 0x80,
}

// OpusSilence is a 20 ms Opus frame (CELT silence).
var OpusSilence = []byte{0xf8, 0xff, 0xfe}

// Peer is one participant.
type Peer struct {
	Room  *lksdk.Room
	start time.Time

	mu          sync.Mutex
	subscribing bool
	first       map[string]time.Duration // "identity/kind" → first packet, since Join
	changed     chan struct{}            // closed and replaced on each new entry of first

	stop    chan struct{}
	writers sync.WaitGroup
	gone    chan struct{} // closed when the SFU disconnects us
}

// Key names a remote track kind of a participant in First and Wait.
func Key(identity string, kind webrtc.RTPCodecType) string { return identity + "/" + kind.String() }

// Join connects to signalURL with jwt. With publish it publishes a camera
// and a microphone track first; then it subscribes to every track that is
// or will be published.
func Join(signalURL, jwt string, publish bool, timeout time.Duration) (*Peer, error) {
	p := &Peer{start: time.Now(), first: map[string]time.Duration{}, changed: make(chan struct{}),
		stop: make(chan struct{}), gone: make(chan struct{})}
	var goneOnce sync.Once
	cb := &lksdk.RoomCallback{OnDisconnected: func() { goneOnce.Do(func() { close(p.gone) }) }, ParticipantCallback: lksdk.ParticipantCallback{
		OnTrackSubscribed: func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
			key := Key(rp.Identity(), track.Kind())
			go func() {
				for {
					if _, _, err := track.ReadRTP(); err != nil {
						return
					}
					p.got(key)
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
	room, err := lksdk.ConnectToRoomWithToken(signalURL, jwt, cb, lksdk.WithAutoSubscribe(false), lksdk.WithConnectTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	p.Room = room
	if publish {
		if err := p.publish(); err != nil {
			p.Close()
			return nil, err
		}
	}
	p.mu.Lock()
	p.subscribing = true
	p.mu.Unlock()
	for _, rp := range room.GetRemoteParticipants() {
		for _, pub := range rp.TrackPublications() {
			if rpub, ok := pub.(*lksdk.RemoteTrackPublication); ok {
				if err := rpub.SetSubscribed(true); err != nil {
					p.Close()
					return nil, fmt.Errorf("subscribe to %s: %w", rp.Identity(), err)
				}
			}
		}
	}
	return p, nil
}

func (p *Peer) publish() error {
	audio, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
	if err != nil {
		return err
	}
	video, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000})
	if err != nil {
		return err
	}
	lp := p.Room.LocalParticipant
	if _, err := lp.PublishTrack(video, &lksdk.TrackPublicationOptions{Name: "camera", Source: livekit.TrackSource_CAMERA, VideoWidth: 8, VideoHeight: 8}); err != nil {
		return fmt.Errorf("publish video: %w", err)
	}
	if _, err := lp.PublishTrack(audio, &lksdk.TrackPublicationOptions{Name: "mic", Source: livekit.TrackSource_MICROPHONE}); err != nil {
		return fmt.Errorf("publish audio: %w", err)
	}
	p.writers.Add(2)
	go p.write(audio, OpusSilence, 20*time.Millisecond)
	go p.write(video, VP8KeyFrame8x8, time.Second/30)
	return nil
}

// write sends sample every frame period until Close: real-time synthetic
// media (the SFU forwards RTP without decoding it).
func (p *Peer) write(track *lksdk.LocalTrack, sample []byte, every time.Duration) {
	defer p.writers.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
			_ = track.WriteSample(media.Sample{Data: sample, Duration: every}, nil)
		}
	}
}

func (p *Peer) got(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.first[key]; ok {
		return
	}
	p.first[key] = time.Since(p.start)
	close(p.changed)
	p.changed = make(chan struct{})
}

// First is when the first packet of key arrived, since Join began.
func (p *Peer) First(key string) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.first[key]
	return d, ok
}

// Wait waits until packets of every key have arrived, and returns the
// keys still missing when timeout passes.
func (p *Peer) Wait(keys []string, timeout time.Duration) []string {
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		var missing []string
		for _, k := range keys {
			if _, ok := p.first[k]; !ok {
				missing = append(missing, k)
			}
		}
		changed := p.changed
		p.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-deadline:
			return missing
		}
	}
}

// Disconnected is closed when the connection to the SFU has ended.
func (p *Peer) Disconnected() <-chan struct{} { return p.gone }

// Close stops publishing and leaves the room.
func (p *Peer) Close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.writers.Wait()
	if p.Room != nil {
		p.Room.Disconnect()
	}
}
