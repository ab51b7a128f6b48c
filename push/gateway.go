package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/ssrf"
	"github.com/tessera-hs/tessera/roomserver"
)

// The push gateway API: what a notification looks like and how it is
// posted.
// https://spec.matrix.org/v1.19/push-gateway-api/#post_matrixpushv1notify

// gatewayRequest is the body of POST /_matrix/push/v1/notify.
type gatewayRequest struct {
	Notification gatewayNotification `json:"notification"`
}

type gatewayNotification struct {
	EventID           string          `json:"event_id,omitempty"`
	RoomID            string          `json:"room_id,omitempty"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	UserIsTarget      *bool           `json:"user_is_target,omitempty"`
	Prio              string          `json:"prio,omitempty"`
	Content           json.RawMessage `json:"content,omitempty"`
	Counts            gatewayCounts   `json:"counts"`
	Devices           []gatewayDevice `json:"devices"`
}

// gatewayCounts: "Counts whose value is zero should be omitted".
type gatewayCounts struct {
	Unread      int `json:"unread,omitempty"`
	MissedCalls int `json:"missed_calls,omitempty"`
}

type gatewayDevice struct {
	AppID     string          `json:"app_id"`
	PushKey   string          `json:"pushkey"`
	PushKeyTS int64           `json:"pushkey_ts"`
	Data      json.RawMessage `json:"data,omitempty"`
	Tweaks    map[string]any  `json:"tweaks,omitempty"`
}

// eventInfo is what a notification says of its event; the same for every
// recipient, so loaded once per event (eventCache).
type eventInfo struct {
	eventID, roomID, typ, sender string
	stateKey                     *string
	content                      json.RawMessage
	senderDisplayName            string
	roomName, roomAlias          string
}

// eventCache keeps the eventInfo of recent events: a message to a room of
// a thousand users with pushers is loaded once, not a thousand times.
type eventCache struct {
	mu      sync.Mutex
	entries map[string]*eventEntry
}

type eventEntry struct {
	once sync.Once
	info *eventInfo
	err  error
}

// maxCachedEvents bounds the cache; it is emptied when full.
const maxCachedEvents = 4096

// prime stores an event's info, known at evaluation.
func (c *eventCache) prime(info *eventInfo) {
	e := &eventEntry{info: info}
	e.once.Do(func() {})
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[info.eventID]; ok {
		return
	}
	if len(c.entries) >= maxCachedEvents {
		c.entries = map[string]*eventEntry{}
	}
	c.entries[info.eventID] = e
}

// get returns the event's info, loading it once however many ask at
// the same time. A failed load is not kept.
func (c *eventCache) get(eventID string, load func() (*eventInfo, error)) (*eventInfo, error) {
	c.mu.Lock()
	e, ok := c.entries[eventID]
	if !ok {
		if len(c.entries) >= maxCachedEvents {
			c.entries = map[string]*eventEntry{}
		}
		e = &eventEntry{}
		c.entries[eventID] = e
	}
	c.mu.Unlock()
	e.once.Do(func() { e.info, e.err = load() })
	if e.err != nil {
		c.mu.Lock()
		if c.entries[eventID] == e {
			delete(c.entries, eventID)
		}
		c.mu.Unlock()
	}
	return e.info, e.err
}

// eventInfo is what a notification to userID says of an event the user
// can see. Evaluation primes the cache; after a restart it is loaded: the event (or the user's own invite, which they can see
// without being in the room), and from the room's state at it, the room's
// name and canonical alias and the sender's display name. A 404 error
// means the user can no longer see it.
func (s *Service) eventInfo(ctx context.Context, userID, roomID, eventID string) (*eventInfo, error) {
	return s.delivery.events.get(eventID, func() (*eventInfo, error) {
		ev, err := s.rooms.Event(ctx, roomID, userID, eventID)
		if me, ok := mxerr.As(err); ok && me.Status == http.StatusNotFound {
			if own, err2 := s.rooms.OwnMembershipEvent(ctx, userID, eventID); err2 == nil {
				ev, err = own, nil
			}
		}
		if err != nil {
			return nil, err
		}
		info := &eventInfo{eventID: ev.EventID(), roomID: ev.RoomID, typ: ev.Type(), sender: string(ev.SenderID()),
			stateKey: ev.StateKey(), content: ev.Content()}
		st, err := s.rooms.StateAt(ctx, roomID, ev.StreamPos)
		if err != nil {
			return nil, err
		}
		info.roomName = stateString(st, "m.room.name", "name")
		info.roomAlias = stateString(st, "m.room.canonical_alias", "alias")
		if m, ok := st[roomserver.StateKey{Type: spec.MRoomMember, StateKey: info.sender}]; ok {
			var c struct {
				DisplayName string `json:"displayname"`
			}
			_ = json.Unmarshal(m.Content(), &c)
			info.senderDisplayName = c.DisplayName
		}
		return info, nil
	})
}

// tweaks are the set_tweak actions of a notification: {"sound": "default",
// "highlight": true}. highlight without a value is true.
func tweaks(actions []json.RawMessage) map[string]any {
	out := map[string]any{}
	for _, raw := range actions {
		var a struct {
			SetTweak string           `json:"set_tweak"`
			Value    *json.RawMessage `json:"value"`
		}
		if json.Unmarshal(raw, &a) != nil || a.SetTweak == "" {
			continue
		}
		if a.Value == nil {
			out[a.SetTweak] = true
			continue
		}
		var v any
		if json.Unmarshal(*a.Value, &v) == nil {
			out[a.SetTweak] = v
		}
	}
	return out
}

// priority is Synapse's: high for a notification that makes a sound or
// highlights, and for an encrypted event (whose content the server
// cannot judge), low otherwise.
func priority(typ string, tw map[string]any) string {
	if typ == "m.room.encrypted" || tw["sound"] != nil {
		return "high"
	}
	if h, ok := tw["highlight"].(bool); ok && h {
		return "high"
	}
	return "low"
}

// gatewayResult is how a gateway answered.
type gatewayResult int

const (
	delivered gatewayResult = iota
	rejected                // the gateway rejected this pusher's pushkey
	retryable               // network error, timeout, 429 or 5xx: try again later
	permanent               // another 4xx or 3xx, a refused address: trying again will not help
)

// maxGatewayResponse caps the response read from a gateway.
const maxGatewayResponse = 64 << 10

// newGatewayClient is the HTTP client of push gateways: the SSRF-checking
// dialer, no proxy, no redirects, keep-alive connections (one gateway
// usually serves every pusher).
func newGatewayClient(policy *ssrf.Policy, lookup ssrf.Lookup, timeout time.Duration) *http.Client {
	d := ssrf.NewDialer(policy, lookup)
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            d.DialContext,
			TLSHandshakeTimeout:    10 * time.Second,
			MaxIdleConns:           maxInFlight,
			MaxIdleConnsPerHost:    maxInFlight,
			MaxConnsPerHost:        maxInFlight,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: 64 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// post sends one notification to a pusher's gateway and classifies the
// answer.
func (d *deliverer) post(ctx context.Context, p *httpPusher, body []byte) (gatewayResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return permanent, fmt.Errorf("push gateway request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Tessera")
	resp, err := d.client.Do(req)
	if err != nil {
		if errors.Is(err, ssrf.ErrBlocked) {
			return permanent, err
		}
		return retryable, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxGatewayResponse))
	switch {
	case err != nil:
		return retryable, fmt.Errorf("reading the gateway's answer: %w", err)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return retryable, fmt.Errorf("gateway answered %d", resp.StatusCode)
	case resp.StatusCode/100 != 2:
		return permanent, fmt.Errorf("gateway answered %d", resp.StatusCode)
	}
	var answer struct {
		Rejected []string `json:"rejected"`
	}
	// A 2xx whose body is not the spec's still delivered the
	// notification; only a rejected list says otherwise.
	_ = json.Unmarshal(raw, &answer)
	for _, k := range answer.Rejected {
		if k == p.key.pushKey {
			return rejected, nil
		}
	}
	return delivered, nil
}
