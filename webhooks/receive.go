package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// Delivery is one POST to a hook's URL.
type Delivery struct {
	HookID string
	// ContentLength is the declared body length, -1 if unknown.
	ContentLength int64
	Body          io.Reader
	// GitHub's headers: X-Hub-Signature-256, X-GitHub-Event and
	// X-GitHub-Delivery.
	Signature, Event, DeliveryID string
	// Token is a generic hook's secret, from "Authorization: Bearer" or
	// the token query parameter.
	Token string
}

// Result is what became of a delivery.
type Result struct {
	// EventID is the notice posted, empty when nothing was.
	EventID string `json:"event_id,omitempty"`
	// Duplicate: a GitHub delivery ID seen before; nothing was posted.
	Duplicate bool `json:"duplicate,omitempty"`
	// Ignored: an event that posts nothing (a workflow run that did not
	// fail).
	Ignored bool `json:"ignored,omitempty"`
}

// Receive checks a delivery and posts its notice into the hook's room. The
// checks come in this order, and a refused delivery posts nothing: unknown
// hook 404 M_NOT_FOUND; disabled hook (the bot left the room) 410
// M_NOT_FOUND; a GitHub signature header missing or malformed, or a wrong
// generic token, 401 M_UNAUTHORIZED; a body over max_body_bytes 413
// M_TOO_LARGE (enforced while reading); a wrong GitHub signature, checked
// on the raw body before anything parses it, 401 M_UNAUTHORIZED; over the
// hook's rate 429 M_LIMIT_EXCEEDED; not JSON 400 M_NOT_JSON; the wrong
// shape 400 M_BAD_JSON.
func (s *Service) Receive(ctx context.Context, d Delivery) (*Result, error) {
	h, err := s.Get(ctx, d.HookID)
	if err != nil {
		return nil, err
	}
	if h.Disabled {
		return nil, errDisabled()
	}
	var wantMAC []byte
	switch h.Kind {
	case KindGitHub:
		sig, ok := strings.CutPrefix(d.Signature, "sha256=")
		if !ok {
			return nil, mxerr.Unauthorized("Missing or malformed X-Hub-Signature-256")
		}
		if wantMAC, err = hex.DecodeString(sig); err != nil || len(wantMAC) != sha256.Size {
			return nil, mxerr.Unauthorized("Missing or malformed X-Hub-Signature-256")
		}
	default:
		if subtle.ConstantTimeCompare([]byte(d.Token), []byte(h.Secret)) != 1 {
			return nil, mxerr.Unauthorized("Wrong or missing webhook token")
		}
	}
	max := s.cfg.MaxBodyBytes
	if d.ContentLength > max {
		return nil, mxerr.TooLarge("Body is larger than %d bytes", max)
	}
	body, err := io.ReadAll(io.LimitReader(d.Body, max+1))
	if err != nil {
		return nil, mxerr.Unknown(http.StatusBadRequest, "Could not read the body")
	}
	if int64(len(body)) > max {
		return nil, mxerr.TooLarge("Body is larger than %d bytes", max)
	}
	if h.Kind == KindGitHub {
		mac := hmac.New(sha256.New, []byte(h.Secret))
		mac.Write(body)
		if !hmac.Equal(mac.Sum(nil), wantMAC) {
			return nil, mxerr.Unauthorized("Wrong X-Hub-Signature-256")
		}
	}
	if ok, wait := s.limiter.Allow(h.ID); !ok {
		return nil, mxerr.LimitExceeded(wait.Milliseconds())
	}
	if !json.Valid(body) {
		return nil, mxerr.NotJSON("Body is not JSON")
	}
	var content map[string]any
	switch h.Kind {
	case KindGitHub:
		if d.Event == "" {
			return nil, mxerr.BadJSON("Missing X-GitHub-Event")
		}
		if content, err = formatGitHub(d.Event, body); err != nil {
			return nil, err
		}
	default:
		if content, err = formatGeneric(body); err != nil {
			return nil, err
		}
	}
	if content == nil {
		return &Result{Ignored: true}, nil
	}
	content["org.tessera.webhook"] = map[string]any{"hook_id": h.ID, "kind": h.Kind, "event": d.Event}
	dedupe := h.Kind == KindGitHub && d.DeliveryID != ""
	if dedupe {
		fresh, err := s.recordDelivery(ctx, h.ID, d.DeliveryID)
		if err != nil {
			return nil, err
		}
		if !fresh {
			return &Result{Duplicate: true}, nil
		}
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, err
	}
	ev, err := s.rooms.Send(ctx, roomserver.SendRequest{RoomID: h.RoomID, Sender: s.BotUserID(),
		Type: "m.room.message", Content: raw})
	if err != nil {
		if dedupe {
			// Not posted: GitHub's redelivery may try again.
			_, _ = s.db.ExecContext(context.WithoutCancel(ctx),
				`DELETE FROM webhook_deliveries WHERE hook_id = $1 AND delivery_id = $2`, h.ID, d.DeliveryID)
		}
		if m, merr := s.rooms.Membership(ctx, h.RoomID, s.BotUserID()); merr == nil && m != spec.Join {
			// The bot left before its listener heard of it.
			if err := s.disableRoom(ctx, h.RoomID, time.Now().UnixMilli()); err != nil {
				return nil, err
			}
			return nil, errDisabled()
		}
		return nil, fmt.Errorf("post webhook %s: %w", h.ID, err)
	}
	return &Result{EventID: ev.EventID()}, nil
}

// errDisabled is the answer of a disabled hook.
func errDisabled() error {
	return &mxerr.Error{Status: http.StatusGone, Code: "M_NOT_FOUND",
		Message: "This webhook is disabled: the webhooks bot is no longer in its room"}
}

// formatGeneric turns hookshot's generic shape, {"text", "html",
// "username"}, into a notice. username prefixes the message.
func formatGeneric(body []byte) (map[string]any, error) {
	var p struct {
		Text     *string `json:"text"`
		HTML     *string `json:"html"`
		Username *string `json:"username"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&p); err != nil {
		return nil, mxerr.BadJSON("Expected an object with text, html and username strings")
	}
	text, html := deref(p.Text), deref(p.HTML)
	if strings.TrimSpace(text) == "" && strings.TrimSpace(html) == "" {
		return nil, mxerr.BadJSON("text or html is required")
	}
	if text == "" {
		text = stripTags(html)
	}
	if user := deref(p.Username); user != "" {
		text = user + ": " + text
		if html != "" {
			html = "<strong>" + escape(user) + "</strong>: " + html
		}
	}
	return notice(text, html), nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// notice is an m.notice's content; html may be empty.
func notice(text, html string) map[string]any {
	c := map[string]any{"msgtype": "m.notice", "body": text}
	if html != "" {
		c["format"] = "org.matrix.custom.html"
		c["formatted_body"] = html
	}
	return c
}

// stripTags is a plain-text rendering of HTML for the body of a generic
// message that only sent html.
func stripTags(s string) string {
	var b strings.Builder
	in := false
	for _, r := range s {
		switch {
		case r == '<':
			in = true
		case r == '>':
			in = false
		case !in:
			b.WriteRune(r)
		}
	}
	return unescape(b.String())
}
