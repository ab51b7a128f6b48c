package push

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// The links in emails: confirming an address for an email pusher, and
// unsubscribing from one. Neither needs a login (they are clicked from a
// mailbox), so each is signed with a key only this server knows and
// names the user, the address and what it does.

// EmailLinkPath is where the links are served (clientapi).
const EmailLinkPath = "/_tessera/push/v1/email"

// Link actions.
const (
	LinkConfirm     = "confirm"
	LinkUnsubscribe = "unsubscribe"
)

// confirmLinkLifetime is how long a confirmation link works; an
// unsubscribe link works as long as its pusher exists, as Synapse's.
const confirmLinkLifetime = 7 * 24 * time.Hour

type linkPayload struct {
	Action  string `json:"a"`
	UserID  string `json:"u"`
	Address string `json:"e"`
	Issued  int64  `json:"t"`
}

// linkSecret loads the signing key, making it at the first start.
func linkSecret(ctx context.Context, db *database.DB) ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO push_secrets (name, value) VALUES ('email_links', $1)
		ON CONFLICT (name) DO NOTHING`, hex.EncodeToString(b)); err != nil {
		return nil, fmt.Errorf("push: store the email link key: %w", err)
	}
	var v string
	if err := db.QueryRowContext(ctx, `SELECT value FROM push_secrets WHERE name = 'email_links'`).Scan(&v); err != nil {
		return nil, fmt.Errorf("push: read the email link key: %w", err)
	}
	return hex.DecodeString(v)
}

// link is the URL of a signed link.
func (e *emailer) link(action, userID, address string) string {
	payload, _ := json.Marshal(linkPayload{Action: action, UserID: userID, Address: address, Issued: e.s.now().UnixMilli()})
	p := base64.RawURLEncoding.EncodeToString(payload)
	token := p + "." + base64.RawURLEncoding.EncodeToString(e.sign(p))
	return strings.TrimSuffix(e.cfg.PublicBaseURL, "/") + EmailLinkPath + "/" + action + "?token=" + url.QueryEscape(token)
}

func (e *emailer) sign(payload string) []byte {
	m := hmac.New(sha256.New, e.secret)
	m.Write([]byte("tessera email link\x00" + payload))
	return m.Sum(nil)
}

// EmailLink checks a link's token for an action and returns the user and
// the address it is for; 403 M_FORBIDDEN if it is not one this server
// signed for that action, or has expired.
func (s *Service) EmailLink(action, token string) (userID, address string, err error) {
	bad := mxerr.Forbidden("This link is not valid (it may have expired).")
	e := s.email
	if e == nil {
		return "", "", mxerr.NotFound("Email notifications are not enabled on this server.")
	}
	p, sig, ok := strings.Cut(token, ".")
	if !ok {
		return "", "", bad
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, e.sign(p)) {
		return "", "", bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return "", "", bad
	}
	var lp linkPayload
	if json.Unmarshal(raw, &lp) != nil || lp.Action != action {
		return "", "", bad
	}
	if action == LinkConfirm && s.now().Sub(time.UnixMilli(lp.Issued)) > confirmLinkLifetime {
		return "", "", bad
	}
	return lp.UserID, lp.Address, nil
}

// ConfirmEmail follows a confirmation link: the address is the user's
// from now on, and their email pushers for it start (with what is
// notified from now on, not what came while it waited).
func (s *Service) ConfirmEmail(ctx context.Context, token string) error {
	userID, address, err := s.EmailLink(LinkConfirm, token)
	if err != nil {
		return err
	}
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO push_email_addresses (user_id, address, confirmed) VALUES ($1, $2, 1)
			ON CONFLICT (user_id, address) DO UPDATE SET confirmed = 1`, userID, address); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE pushers SET enabled = 1, last_stream_pos = $1
			WHERE user_id = $2 AND kind = 'email' AND pushkey = $3 AND enabled = 0`, s.startPos(), userID, address)
		return err
	})
	if err != nil {
		return fmt.Errorf("confirm an email address: %w", err)
	}
	return s.pushersChanged(ctx, userID)
}

// UnsubscribeEmail follows an unsubscribe link (or a mail client's
// one-click List-Unsubscribe): the user's email pusher for the address is
// deleted, with the mails it was about to send.
func (s *Service) UnsubscribeEmail(ctx context.Context, token string) error {
	userID, address, err := s.EmailLink(LinkUnsubscribe, token)
	if err != nil {
		return err
	}
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM pushers WHERE user_id = $1 AND kind = 'email' AND pushkey = $2`,
			userID, address); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM push_email_batches WHERE user_id = $1 AND address = $2`, userID, address); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM push_email_throttle WHERE user_id = $1 AND address = $2`, userID, address)
		return err
	})
	if err != nil {
		return fmt.Errorf("unsubscribe: %w", err)
	}
	return s.pushersChanged(ctx, userID)
}
