package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Bounds on /keys/upload. A request over them is refused whole.
const (
	// MaxOneTimeKeysPerUpload bounds the one-time keys of one request
	// (clients upload a few dozen at a time).
	MaxOneTimeKeysPerUpload = 1000
	// maxStoredOneTimeKeys bounds the unclaimed one-time keys of a device.
	maxStoredOneTimeKeys = 10000
	// maxFallbackKeysPerUpload bounds the fallback keys (algorithms) of
	// one request.
	maxFallbackKeysPerUpload = 16
	// maxKeyJSON bounds one one-time or fallback key object.
	maxKeyJSON = 4096
	// maxDeviceKeysJSON bounds the device_keys object.
	maxDeviceKeysJSON = 64 << 10
	// maxKeyIDLen bounds an "<algorithm>:<key_id>" name.
	maxKeyIDLen = 255
)

// UploadRequest is the body of POST /keys/upload.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysupload
type UploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

// deviceKeysObject is the DeviceKeys object, for validation.
type deviceKeysObject struct {
	UserID     string            `json:"user_id"`
	DeviceID   string            `json:"device_id"`
	Algorithms []string          `json:"algorithms"`
	Keys       map[string]string `json:"keys"`
	Signatures signatures        `json:"signatures"`
}

// newDeviceKeys is validated device_keys: canonical JSON and the device's
// ed25519 key.
type newDeviceKeys struct {
	json    json.RawMessage
	ed25519 string
}

// oneTimeKey is a validated one-time or fallback key.
type oneTimeKey struct {
	algorithm, keyID string
	json             json.RawMessage // canonical
	signed           bool            // must carry the device's signature
}

func present(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s != "" && s != "null"
}

func parseDeviceKeys(raw json.RawMessage, userID, deviceID string) (*newDeviceKeys, error) {
	if len(raw) > maxDeviceKeysJSON {
		return nil, mxerr.TooLarge("device_keys is larger than %d bytes", maxDeviceKeysJSON)
	}
	var dk deviceKeysObject
	if err := json.Unmarshal(raw, &dk); err != nil {
		return nil, mxerr.BadJSON("device_keys is not a valid DeviceKeys object: %v", err)
	}
	// A body that does not match the DeviceKeys schema, or names another
	// user or device, is malformed: 400 M_BAD_JSON, as Synapse answers.
	// Signatures that do not verify are M_INVALID_PARAM below.
	if dk.UserID != userID {
		return nil, mxerr.BadJSON("device_keys.user_id must be your user ID %s", userID)
	}
	if dk.DeviceID != deviceID {
		return nil, mxerr.BadJSON("device_keys.device_id must be your device ID %s", deviceID)
	}
	if len(dk.Algorithms) == 0 {
		return nil, mxerr.BadJSON("device_keys.algorithms is required")
	}
	if len(dk.Keys) == 0 {
		return nil, mxerr.BadJSON("device_keys.keys is required")
	}
	if len(dk.Signatures) == 0 {
		return nil, mxerr.BadJSON("device_keys.signatures is required")
	}
	ed, ok := dk.Keys["ed25519:"+deviceID]
	if !ok {
		return nil, mxerr.InvalidParam("device_keys.keys has no ed25519:%s key", deviceID)
	}
	if _, err := decodeKey(ed); err != nil {
		return nil, mxerr.InvalidParam("device_keys.keys ed25519:%s: %v", deviceID, err)
	}
	if err := verify(userID, deviceID, ed, raw); err != nil {
		return nil, mxerr.InvalidParam("device_keys is not signed by its own ed25519 key: %v", err)
	}
	c, err := canonical(raw)
	if err != nil {
		return nil, mxerr.BadJSON("device_keys is not valid JSON")
	}
	return &newDeviceKeys{json: c, ed25519: ed}, nil
}

// parseOneTimeKeys validates a map of "<algorithm>:<key_id>" to key, in a
// stable order.
func parseOneTimeKeys(field string, keys map[string]json.RawMessage) ([]oneTimeKey, error) {
	names := make([]string, 0, len(keys))
	for name := range keys {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make([]oneTimeKey, 0, len(names))
	for _, name := range names {
		raw := keys[name]
		alg, keyID, ok := strings.Cut(name, ":")
		if !ok || alg == "" || keyID == "" || len(name) > maxKeyIDLen {
			return nil, mxerr.InvalidParam("%s: %q is not <algorithm>:<key_id>", field, name)
		}
		if len(raw) > maxKeyJSON {
			return nil, mxerr.TooLarge("%s: key %q is larger than %d bytes", field, name, maxKeyJSON)
		}
		k := oneTimeKey{algorithm: alg, keyID: keyID, signed: strings.HasPrefix(alg, "signed_")}
		trimmed := strings.TrimSpace(string(raw))
		switch {
		case strings.HasPrefix(trimmed, "{"):
			var obj struct {
				Key *string `json:"key"`
			}
			if err := json.Unmarshal(raw, &obj); err != nil || obj.Key == nil || *obj.Key == "" {
				return nil, mxerr.InvalidParam("%s: key %q has no \"key\" string", field, name)
			}
		case strings.HasPrefix(trimmed, `"`) && !k.signed:
			var s string
			if err := json.Unmarshal(raw, &s); err != nil || s == "" {
				return nil, mxerr.InvalidParam("%s: key %q is not a key", field, name)
			}
		default:
			return nil, mxerr.InvalidParam("%s: key %q must be a key object", field, name)
		}
		c, err := gomatrixserverlib.CanonicalJSON(raw)
		if err != nil {
			return nil, mxerr.BadJSON("%s: key %q is not valid JSON", field, name)
		}
		k.json = c
		out = append(out, k)
	}
	return out, nil
}

// verifyKeys checks the device's signature of every signed key.
func verifyKeys(userID, deviceID, ed string, keys ...[]oneTimeKey) error {
	for _, ks := range keys {
		for _, k := range ks {
			if !k.signed {
				continue
			}
			if err := verify(userID, deviceID, ed, k.json); err != nil {
				return mxerr.InvalidParam("Key %s:%s is not signed by the device: %v", k.algorithm, k.keyID, err)
			}
		}
	}
	return nil
}

// deviceKey returns a device's stored device keys and ed25519 key, nil if
// it has none.
func deviceKey(ctx context.Context, q database.Querier, userID, deviceID string) (json.RawMessage, string, error) {
	var js, ed string
	err := q.QueryRowContext(ctx, `SELECT key_json, ed25519 FROM keys_device_keys WHERE user_id = $1 AND device_id = $2`,
		userID, deviceID).Scan(&js, &ed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("get device keys: %w", err)
	}
	return json.RawMessage(js), ed, nil
}

// Upload stores the keys a device publishes and returns its counts of
// unclaimed one-time keys by algorithm. The request is refused whole, and
// nothing stored, if any part is invalid.
func (s *Service) Upload(ctx context.Context, userID, deviceID string, req UploadRequest) (map[string]int, error) {
	var dev *newDeviceKeys
	if present(req.DeviceKeys) {
		var err error
		if dev, err = parseDeviceKeys(req.DeviceKeys, userID, deviceID); err != nil {
			return nil, err
		}
	}
	if len(req.OneTimeKeys) > MaxOneTimeKeysPerUpload {
		return nil, mxerr.TooLarge("At most %d one-time keys may be uploaded at once", MaxOneTimeKeysPerUpload)
	}
	if len(req.FallbackKeys) > maxFallbackKeysPerUpload {
		return nil, mxerr.TooLarge("At most %d fallback keys may be uploaded at once", maxFallbackKeysPerUpload)
	}
	otks, err := parseOneTimeKeys("one_time_keys", req.OneTimeKeys)
	if err != nil {
		return nil, err
	}
	fbs, err := parseOneTimeKeys("fallback_keys", req.FallbackKeys)
	if err != nil {
		return nil, err
	}
	for i := 1; i < len(fbs); i++ {
		for j := range i {
			if fbs[i].algorithm == fbs[j].algorithm {
				return nil, mxerr.InvalidParam("fallback_keys: only one key per algorithm (%s)", fbs[i].algorithm)
			}
		}
	}

	// Signatures are checked before the write transaction, against the
	// device keys known now; again inside it only if those appeared since.
	stored, storedEd, err := deviceKey(ctx, s.db, userID, deviceID)
	if err != nil {
		return nil, err
	}
	if dev != nil && stored != nil && !sameContent(stored, dev.json) {
		return nil, mxerr.InvalidParam("Device %s already has different device keys", deviceID)
	}
	signKey := storedEd
	if dev != nil {
		signKey = dev.ed25519
	}
	if signKey != "" {
		if err := verifyKeys(userID, deviceID, signKey, otks, fbs); err != nil {
			return nil, err
		}
	}

	var counts map[string]int
	err = s.withTx(ctx, func(tx *database.Tx, ch *changes) error {
		stored, storedEd, err := deviceKey(ctx, tx, userID, deviceID)
		if err != nil {
			return err
		}
		key := storedEd
		if dev != nil {
			if stored != nil {
				if !sameContent(stored, dev.json) {
					return mxerr.InvalidParam("Device %s already has different device keys", deviceID)
				}
			} else {
				if _, err := tx.ExecContext(ctx, `INSERT INTO keys_device_keys (user_id, device_id, key_json, ed25519)
					VALUES ($1, $2, $3, $4)`, userID, deviceID, string(dev.json), dev.ed25519); err != nil {
					return fmt.Errorf("store device keys: %w", err)
				}
				if err := s.record(ctx, tx, ch, userID); err != nil {
					return err
				}
				if err := s.recordDevice(ctx, tx, ch, userID, deviceID, false); err != nil {
					return err
				}
			}
			key = dev.ed25519
		}
		if key != signKey && key != "" {
			if err := verifyKeys(userID, deviceID, key, otks, fbs); err != nil {
				return err
			}
		}
		for _, k := range otks {
			var have string
			err := tx.QueryRowContext(ctx, `SELECT key_json FROM keys_one_time_keys
				WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
				userID, deviceID, k.algorithm, k.keyID).Scan(&have)
			switch {
			case err == nil:
				if have != string(k.json) {
					return mxerr.InvalidParam("One-time key %s:%s already exists with different content", k.algorithm, k.keyID)
				}
				continue
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("get one-time key: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO keys_one_time_keys (user_id, device_id, algorithm, key_id, key_json)
				VALUES ($1, $2, $3, $4, $5)`, userID, deviceID, k.algorithm, k.keyID, string(k.json)); err != nil {
				return fmt.Errorf("store one-time key: %w", err)
			}
		}
		for _, k := range fbs {
			var haveID, haveJSON string
			err := tx.QueryRowContext(ctx, `SELECT key_id, key_json FROM keys_fallback_keys
				WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`,
				userID, deviceID, k.algorithm).Scan(&haveID, &haveJSON)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("get fallback key: %w", err)
			}
			if err == nil && haveID == k.keyID && haveJSON == string(k.json) {
				continue // the same key again: it keeps its used flag
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO keys_fallback_keys
				(user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, 0)
				ON CONFLICT (user_id, device_id, algorithm)
				DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = excluded.used`,
				userID, deviceID, k.algorithm, k.keyID, string(k.json)); err != nil {
				return fmt.Errorf("store fallback key: %w", err)
			}
		}
		if counts, err = oneTimeKeyCounts(ctx, tx, userID, deviceID); err != nil {
			return err
		}
		total := 0
		for _, n := range counts {
			total += n
		}
		if total > maxStoredOneTimeKeys {
			return mxerr.TooLarge("A device may hold at most %d unclaimed one-time keys", maxStoredOneTimeKeys)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return counts, nil
}
