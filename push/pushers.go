package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Pushers: where a user's notifications are to be delivered.
// https://spec.matrix.org/v1.19/client-server-api/#push-notifications
//
// HTTP pushers receive notifications through their push gateways
// (deliver.go); email pushers get mails through the SMTP relay of the
// config (email.go), and are refused when there is none.

// Pusher is one pusher as GET /pushers lists it.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushers
type Pusher struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

// Limits from pusher.yaml.
const (
	maxPushKeyBytes = 512
	maxAppIDChars   = 64
)

// pushGatewayPath is the path a push gateway's URL must have.
const pushGatewayPath = "/_matrix/push/v1/notify"

// Pushers lists a user's pushers.
func (s *Service) Pushers(ctx context.Context, userID string) ([]Pusher, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT pushkey, kind, app_id, app_display_name, device_display_name,
		profile_tag, lang, data FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey`, userID)
	if err != nil {
		return nil, fmt.Errorf("pushers: %w", err)
	}
	defer rows.Close()
	out := []Pusher{}
	for rows.Next() {
		var p Pusher
		var data string
		if err := rows.Scan(&p.PushKey, &p.Kind, &p.AppID, &p.AppDisplayName, &p.DeviceDisplayName,
			&p.ProfileTag, &p.Lang, &data); err != nil {
			return nil, err
		}
		p.Data = json.RawMessage(data)
		out = append(out, p)
	}
	return out, rows.Err()
}

// SetPusher handles POST /pushers/set: with a kind, it creates or updates
// the user's pusher for (app_id, pushkey), and unless append is true
// removes other users' pushers for the same pair; with "kind": null it
// deletes the user's pusher. deviceID is the device that set it.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3pushersset
func (s *Service) SetPusher(ctx context.Context, userID, deviceID string, body []byte) error {
	var b map[string]json.RawMessage
	if err := httpx.Unmarshal(body, &b); err != nil {
		return err
	}
	str := func(name string, out *string) (bool, error) {
		raw, ok := b[name]
		if !ok || string(raw) == "null" {
			return false, nil
		}
		if json.Unmarshal(raw, out) != nil {
			return false, mxerr.BadJSON("'%s' must be a string", name)
		}
		return true, nil
	}
	var p Pusher
	var missing []string
	for _, f := range []struct {
		name string
		out  *string
	}{{"app_id", &p.AppID}, {"pushkey", &p.PushKey}} {
		ok, err := str(f.name, f.out)
		if err != nil {
			return err
		}
		if !ok {
			missing = append(missing, f.name)
		}
	}
	kindRaw, hasKind := b["kind"]
	if !hasKind {
		missing = append([]string{"kind"}, missing...)
	}
	if len(missing) > 0 {
		return mxerr.MissingParam("Missing parameters: %s", strings.Join(missing, ", "))
	}
	if len(p.PushKey) > maxPushKeyBytes {
		return mxerr.InvalidParam("pushkey must be at most %d bytes", maxPushKeyBytes)
	}
	if utf8.RuneCountInString(p.AppID) > maxAppIDChars {
		return mxerr.InvalidParam("app_id must be at most %d characters", maxAppIDChars)
	}
	if string(kindRaw) == "null" {
		if p.AppID == EmailAppID {
			p.PushKey = strings.ToLower(strings.TrimSpace(p.PushKey)) // as stored
		}
		if _, err := s.db.ExecContext(ctx, `DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`,
			userID, p.AppID, p.PushKey); err != nil {
			return fmt.Errorf("delete pusher: %w", err)
		}
		return s.pushersChanged(ctx, userID)
	}
	if json.Unmarshal(kindRaw, &p.Kind) != nil {
		return mxerr.BadJSON("'kind' must be a string or null")
	}
	for _, f := range []struct {
		name string
		out  *string
	}{{"app_display_name", &p.AppDisplayName}, {"device_display_name", &p.DeviceDisplayName}, {"lang", &p.Lang}} {
		ok, err := str(f.name, f.out)
		if err != nil {
			return err
		}
		if !ok {
			missing = append(missing, f.name)
		}
	}
	data, hasData := b["data"]
	if !hasData || string(data) == "null" {
		missing = append(missing, "data")
	}
	if len(missing) > 0 {
		return mxerr.MissingParam("Missing parameters: %s", strings.Join(missing, ", "))
	}
	if _, err := str("profile_tag", &p.ProfileTag); err != nil {
		return err
	}
	appendPusher := false
	if raw, ok := b["append"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &appendPusher) != nil {
			return mxerr.BadJSON("'append' must be a boolean")
		}
	}
	enabled, mailConfirm := true, false
	var d map[string]json.RawMessage
	if json.Unmarshal(data, &d) != nil || d == nil {
		return mxerr.BadJSON("'data' must be an object")
	}
	switch p.Kind {
	case "http":
		if err := checkHTTPPusherData(d); err != nil {
			return err
		}
	case "email":
		if s.email == nil {
			return mxerr.InvalidParam("Email notifications are not enabled on this server")
		}
		if p.AppID != EmailAppID {
			return mxerr.InvalidParam("An email pusher's app_id must be %s", EmailAppID)
		}
		addr, err := canonicalEmail(p.PushKey)
		if err != nil {
			return err
		}
		p.PushKey = addr
		// Synapse takes only an address that is a verified 3PID of the
		// user. This server keeps no 3PIDs: the address proves itself by
		// a link mailed to it, and until then the pusher is disabled.
		if enabled, mailConfirm, err = s.email.prepareAddress(ctx, userID, addr); err != nil {
			return err
		}
	default:
		return mxerr.InvalidParam("Unknown pusher kind %q", p.Kind)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, data); err != nil {
		return mxerr.BadJSON("'data' is not valid JSON")
	}
	now := s.now().UnixMilli()
	// A new pusher delivers what is evaluated from now on; one set again
	// keeps its place, and is enabled again with its failures forgotten.
	var removed []string // the users whose pushers of this pushkey were removed
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name,
			device_display_name, profile_tag, lang, data, device_id, created_ts, last_stream_pos, last_success_ts, enabled)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $11, $13)
			ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind,
				app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name,
				profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,
				device_id = excluded.device_id, enabled = excluded.enabled, failing_since = 0,
				last_success_ts = excluded.last_success_ts`,
			userID, p.AppID, p.PushKey, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang,
			compact.String(), deviceID, now, s.startPos(), enabled); err != nil {
			return fmt.Errorf("store pusher: %w", err)
		}
		if !appendPusher {
			// "Otherwise, the homeserver must remove any other pushers
			// with the same App ID and pushkey for different users."
			rows, err := tx.QueryContext(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id != $3
				RETURNING user_id`, p.AppID, p.PushKey, userID)
			if err != nil {
				return fmt.Errorf("remove other pushers: %w", err)
			}
			for removed = removed[:0]; rows.Next(); {
				var u string
				if err := rows.Scan(&u); err != nil {
					rows.Close()
					return fmt.Errorf("remove other pushers: %w", err)
				}
				removed = append(removed, u)
			}
			if err := rows.Close(); err != nil {
				return fmt.Errorf("remove other pushers: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if p.Kind == "email" && mailConfirm {
		s.email.mailConfirmation(userID, p.PushKey)
	}
	for _, u := range append(removed, userID) {
		if err := s.pushersChanged(ctx, u); err != nil {
			return err
		}
	}
	return nil
}

// checkHTTPPusherData checks an http pusher's data: a url, "an HTTPS URL
// with a path of /_matrix/push/v1/notify" (plain HTTP is accepted too, as
// Synapse does, for gateways on a private network), and a format, if any,
// of event_id_only.
func checkHTTPPusherData(d map[string]json.RawMessage) error {
	raw, ok := d["url"]
	if !ok || string(raw) == "null" {
		return mxerr.MissingParam("'url' is required in 'data' for an http pusher")
	}
	var u string
	if json.Unmarshal(raw, &u) != nil {
		return mxerr.BadJSON("'data.url' must be a string")
	}
	parsed, err := url.Parse(u)
	if err != nil || (parsed.Scheme != "https" && parsed.Scheme != "http") || parsed.Host == "" {
		return mxerr.InvalidParam("'data.url' must be an absolute http(s) URL")
	}
	if parsed.Path != pushGatewayPath {
		return mxerr.InvalidParam("'data.url' must have the path %s", pushGatewayPath)
	}
	if raw, ok := d["format"]; ok && string(raw) != "null" {
		var f string
		if json.Unmarshal(raw, &f) != nil || f != "event_id_only" {
			return mxerr.InvalidParam("'data.format' must be \"event_id_only\" if given")
		}
	}
	return nil
}

// DevicesDeleted deletes the pushers the deleted devices set, as Synapse
// does: a pusher belongs to the login that registered it, and a logged-out
// device must not go on being notified.
func (s *Service) DevicesDeleted(ctx context.Context, userID string, deviceIDs []string) error {
	for _, d := range deviceIDs {
		if _, err := s.db.ExecContext(ctx, `DELETE FROM pushers WHERE user_id = $1 AND device_id = $2`, userID, d); err != nil {
			return fmt.Errorf("delete pushers of a deleted device: %w", err)
		}
	}
	return s.pushersChanged(ctx, userID)
}
