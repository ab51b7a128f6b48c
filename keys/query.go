package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/tessera-hs/tessera/internal/database"
)

// remoteFailure is the failures entry of a remote server we could not
// ask: federation is off, or the server did not answer.
func remoteFailure(msg string) map[string]any {
	return map[string]any{"status": 503, "message": msg}
}

// Cross-signing key types, as stored and as named in "usage".
const (
	typeMaster      = "master"
	typeSelfSigning = "self_signing"
	typeUserSigning = "user_signing"
)

// QueryResponse is the body of the answer to POST /keys/query.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysquery
type QueryResponse struct {
	Failures        map[string]any                        `json:"failures"`
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
}

// Query returns the device and cross-signing keys of users, as requester
// may see them: signatures uploaded by other users are visible only to
// their signer, and the user-signing key only to its owner. devices maps
// a user to the device IDs wanted, none meaning all.
func (s *Service) Query(ctx context.Context, requester string, devices map[string][]string) (*QueryResponse, error) {
	out := &QueryResponse{
		Failures:        map[string]any{},
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
	local := string(s.users.ServerName())
	userIDs := make([]string, 0, len(devices))
	for u := range devices {
		userIDs = append(userIDs, u)
	}
	sort.Strings(userIDs)
	remote := map[string][]string{}
	for _, userID := range userIDs {
		server, err := serverOf(userID)
		if err != nil {
			return nil, err
		}
		if server != local {
			remote[userID] = devices[userID]
			continue
		}
		ok, err := s.users.Exists(ctx, userID)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if err := s.queryUser(ctx, requester, userID, devices[userID], out); err != nil {
			return nil, err
		}
	}
	if err := s.queryRemote(ctx, remote, out); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Service) queryUser(ctx context.Context, requester, userID string, wanted []string, out *QueryResponse) error {
	devs, err := s.users.Devices(ctx, userID)
	if err != nil {
		return err
	}
	names := make(map[string]*string, len(devs))
	for _, d := range devs {
		names[d.DeviceID] = d.DisplayName
	}
	want := map[string]bool{}
	for _, d := range wanted {
		want[d] = true
	}

	// Signatures requester may see: the user's own, and requester's.
	sigs := map[string][]sigRow{}
	rows, err := s.db.QueryContext(ctx, `SELECT target_key_id, signer_user_id, signer_key_id, signature
		FROM keys_signatures WHERE target_user_id = $1 AND (signer_user_id = $1 OR signer_user_id = $2)`,
		userID, requester)
	if err != nil {
		return fmt.Errorf("query signatures: %w", err)
	}
	for rows.Next() {
		var r sigRow
		if err := rows.Scan(&r.target, &r.signer, &r.keyID, &r.sig); err != nil {
			rows.Close()
			return fmt.Errorf("query signatures: %w", err)
		}
		sigs[r.target] = append(sigs[r.target], r)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("query signatures: %w", err)
	}

	userKeys := map[string]json.RawMessage{}
	rows, err = s.db.QueryContext(ctx, `SELECT device_id, key_json FROM keys_device_keys WHERE user_id = $1`, userID)
	if err != nil {
		return fmt.Errorf("query device keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var deviceID, js string
		if err := rows.Scan(&deviceID, &js); err != nil {
			return fmt.Errorf("query device keys: %w", err)
		}
		name, exists := names[deviceID]
		if !exists || (len(want) > 0 && !want[deviceID]) {
			continue
		}
		unsigned := map[string]any{}
		if name != nil {
			unsigned["device_display_name"] = *name
		}
		k, err := withSignatures(json.RawMessage(js), sigs[deviceID], unsigned)
		if err != nil {
			return fmt.Errorf("device keys of %s %s: %w", userID, deviceID, err)
		}
		userKeys[deviceID] = k
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query device keys: %w", err)
	}
	out.DeviceKeys[userID] = userKeys

	cs, err := crossSigningKeys(ctx, s.db, userID)
	if err != nil {
		return err
	}
	if m, ok := cs[typeMaster]; ok {
		k, err := withSignatures(m.json, sigs[m.pub], nil)
		if err != nil {
			return fmt.Errorf("master key of %s: %w", userID, err)
		}
		out.MasterKeys[userID] = k
	}
	if k, ok := cs[typeSelfSigning]; ok {
		out.SelfSigningKeys[userID] = k.json
	}
	if k, ok := cs[typeUserSigning]; ok && userID == requester {
		out.UserSigningKeys[userID] = k.json
	}
	return nil
}

// storedKey is a stored cross-signing key.
type storedKey struct {
	pub  string
	json json.RawMessage
}

// crossSigningKeys returns a user's cross-signing keys by type.
func crossSigningKeys(ctx context.Context, q database.Querier, userID string) (map[string]storedKey, error) {
	rows, err := q.QueryContext(ctx, `SELECT key_type, public_key, key_json FROM keys_cross_signing_keys WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("get cross-signing keys: %w", err)
	}
	defer rows.Close()
	out := map[string]storedKey{}
	for rows.Next() {
		var typ, pub, js string
		if err := rows.Scan(&typ, &pub, &js); err != nil {
			return nil, fmt.Errorf("get cross-signing keys: %w", err)
		}
		out[typ] = storedKey{pub: pub, json: json.RawMessage(js)}
	}
	return out, rows.Err()
}

// ClaimResponse is the body of the answer to POST /keys/claim.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysclaim
type ClaimResponse struct {
	Failures    map[string]any                                   `json:"failures"`
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
}

// Claim takes, for each user, device and algorithm asked for, the oldest
// unclaimed one-time key (which is deleted), or failing that the device's
// fallback key for the algorithm (which is marked used and kept). Unknown
// devices and devices without keys are left out; remote users' servers are
// listed in failures.
func (s *Service) Claim(ctx context.Context, req map[string]map[string]string) (*ClaimResponse, error) {
	out := &ClaimResponse{Failures: map[string]any{}, OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}}
	local := string(s.users.ServerName())
	type want struct{ user, device, alg string }
	var wants []want
	remote := map[string]map[string]string{}
	for user, devs := range req {
		server, err := serverOf(user)
		if err != nil {
			return nil, err
		}
		if server != local {
			remote[user] = devs
			continue
		}
		for dev, alg := range devs {
			wants = append(wants, want{user, dev, alg})
		}
	}
	if len(wants) == 0 {
		s.claimRemote(ctx, remote, out)
		return out, nil
	}
	sort.Slice(wants, func(i, j int) bool {
		a, b := wants[i], wants[j]
		if a.user != b.user {
			return a.user < b.user
		}
		return a.device < b.device
	})
	var got map[string]map[string]map[string]json.RawMessage
	err := s.withTx(ctx, func(tx *database.Tx, _ *changes) error {
		got = map[string]map[string]map[string]json.RawMessage{}
		for _, w := range wants {
			var keyID, js string
			err := tx.QueryRowContext(ctx, `DELETE FROM keys_one_time_keys WHERE id = (
				SELECT id FROM keys_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
				ORDER BY id LIMIT 1) RETURNING key_id, key_json`, w.user, w.device, w.alg).Scan(&keyID, &js)
			if errors.Is(err, sql.ErrNoRows) {
				err = tx.QueryRowContext(ctx, `UPDATE keys_fallback_keys SET used = 1
					WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 RETURNING key_id, key_json`,
					w.user, w.device, w.alg).Scan(&keyID, &js)
				if errors.Is(err, sql.ErrNoRows) {
					continue
				}
			}
			if err != nil {
				return fmt.Errorf("claim key: %w", err)
			}
			if got[w.user] == nil {
				got[w.user] = map[string]map[string]json.RawMessage{}
			}
			got[w.user][w.device] = map[string]json.RawMessage{w.alg + ":" + keyID: json.RawMessage(js)}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out.OneTimeKeys = got
	if s.onClaim != nil && len(got) > 0 {
		claimed := make(map[string][]string, len(got))
		for user, devs := range got {
			for dev := range devs {
				claimed[user] = append(claimed[user], dev)
			}
		}
		s.onClaim(context.WithoutCancel(ctx), claimed)
	}
	s.claimRemote(ctx, remote, out)
	return out, nil
}
