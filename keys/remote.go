package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// The key store over federation: other servers' users' keys, fetched from
// their servers and their device lists cached while they share a room with
// ours; our users' keys served to other servers; and our users' changes
// told to the servers that share a room with them.
// https://spec.matrix.org/v1.19/server-server-api/#device-management
// https://spec.matrix.org/v1.19/server-server-api/#end-to-end-encryption

// Client makes the federation requests of the key store (the federation
// edge). Its answers are the other server's JSON, unchecked.
type Client interface {
	// UserDevices is GET /_matrix/federation/v1/user/devices/{userId}.
	UserDevices(ctx context.Context, server spec.ServerName, userID string) (*UserDevices, error)
	// QueryKeys is POST /_matrix/federation/v1/user/keys/query.
	QueryKeys(ctx context.Context, server spec.ServerName, deviceKeys map[string][]string) (*ServerQueryResponse, error)
	// ClaimKeys is POST /_matrix/federation/v1/user/keys/claim: user ->
	// device -> "<algorithm>:<key_id>" -> key.
	ClaimKeys(ctx context.Context, server spec.ServerName, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// Federation connects the key store to other servers.
type Federation struct {
	Client Client
	// SharesRoom reports whether a user of another server is joined to a
	// room we know. Only such users' device lists are cached: their
	// servers send us m.device_list_update EDUs only while we share a
	// room, so any other cache would silently go stale.
	SharesRoom func(ctx context.Context, userID string) (bool, error)
	// DeviceListUpdate is called, after the commit, with each change to
	// one of our users' devices, to be sent as an m.device_list_update
	// EDU to the servers that share a room with them.
	DeviceListUpdate func(ctx context.Context, u gomatrixserverlib.DeviceListUpdateEvent)
	// SigningKeyUpdate is called, after the commit, when one of our users'
	// master or self-signing key changes, to be sent as an
	// m.signing_key_update EDU likewise.
	SigningKeyUpdate func(ctx context.Context, u SigningKeyUpdate)
}

// SetFederation connects the key store to other servers; call it once,
// before serving requests. Without it, other servers' users are listed
// in the failures of queries and claims.
func (s *Service) SetFederation(f Federation) { s.fed = f }

// UserDevices is the answer to GET /user/devices/{userId}.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1userdevicesuserid
type UserDevices struct {
	UserID         string          `json:"user_id"`
	StreamID       int64           `json:"stream_id"`
	Devices        []UserDevice    `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// UserDevice is one device of UserDevices.
type UserDevice struct {
	DeviceID    string          `json:"device_id"`
	Keys        json.RawMessage `json:"keys"`
	DisplayName *string         `json:"device_display_name,omitempty"`
}

// ServerQueryResponse is the answer to POST /user/keys/query: the
// client's QueryResponse without failures and user-signing keys.
// https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1userkeysquery
type ServerQueryResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys,omitempty"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys,omitempty"`
}

// SigningKeyUpdate is the content of an m.signing_key_update EDU.
// https://spec.matrix.org/v1.19/server-server-api/#end-to-end-encryption
type SigningKeyUpdate struct {
	UserID         string          `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// remoteTimeout bounds what one server may take to answer a query or a
// claim: the client waits for the slowest, and the spec's default
// /keys/query timeout is 10 s.
const remoteTimeout = 10 * time.Second

// errNotOurs refuses another server's request about a user of a third.
func errNotOurs(userID string) error {
	return mxerr.InvalidParam("%s is not a user of this server", userID)
}

// --- Our users' keys, for other servers ---

// LocalUserDevices answers GET /user/devices/{userId}: the devices of one
// of our users that have keys, with their display names, and the user's
// master and self-signing keys.
func (s *Service) LocalUserDevices(ctx context.Context, userID string) (*UserDevices, error) {
	if server, err := serverOf(userID); err != nil {
		return nil, err
	} else if server != string(s.users.ServerName()) {
		return nil, errNotOurs(userID)
	}
	// The version first: if the list changes meanwhile, the other server
	// gets newer devices under an older version, and applying the update
	// that follows again does no harm. The other way round it would miss it.
	out := &UserDevices{UserID: userID, Devices: []UserDevice{}}
	if err := s.db.QueryRowContext(ctx, `SELECT stream_id FROM keys_local_device_streams WHERE user_id = $1`,
		userID).Scan(&out.StreamID); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("device list version: %w", err)
	}
	ok, err := s.users.Exists(ctx, userID)
	if err != nil || !ok {
		return out, err
	}
	q, err := s.queryForServer(ctx, map[string][]string{userID: nil})
	if err != nil {
		return nil, err
	}
	devs, err := s.users.Devices(ctx, userID)
	if err != nil {
		return nil, err
	}
	for _, d := range devs { // sorted by device ID
		if k, ok := q.DeviceKeys[userID][d.DeviceID]; ok {
			out.Devices = append(out.Devices, UserDevice{DeviceID: d.DeviceID, Keys: k, DisplayName: d.DisplayName})
		}
	}
	out.MasterKey, out.SelfSigningKey = q.MasterKeys[userID], q.SelfSigningKeys[userID]
	return out, nil
}

// QueryForServer answers POST /user/keys/query: our users' keys as any
// user of another server may see them (no signatures but their owners',
// no user-signing keys).
func (s *Service) QueryForServer(ctx context.Context, devices map[string][]string) (*ServerQueryResponse, error) {
	local := string(s.users.ServerName())
	for userID := range devices {
		if server, err := serverOf(userID); err != nil {
			return nil, err
		} else if server != local {
			return nil, errNotOurs(userID)
		}
	}
	return s.queryForServer(ctx, devices)
}

func (s *Service) queryForServer(ctx context.Context, devices map[string][]string) (*ServerQueryResponse, error) {
	// No requester: only the owners' own signatures are shown.
	q, err := s.Query(ctx, "", devices)
	if err != nil {
		return nil, err
	}
	return &ServerQueryResponse{DeviceKeys: q.DeviceKeys, MasterKeys: q.MasterKeys, SelfSigningKeys: q.SelfSigningKeys}, nil
}

// ClaimForServer answers POST /user/keys/claim: one-time keys of our
// users' devices.
func (s *Service) ClaimForServer(ctx context.Context, req map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	local := string(s.users.ServerName())
	for userID := range req {
		if server, err := serverOf(userID); err != nil {
			return nil, err
		} else if server != local {
			return nil, errNotOurs(userID)
		}
	}
	res, err := s.Claim(ctx, req)
	if err != nil {
		return nil, err
	}
	return res.OneTimeKeys, nil
}

// --- Our users' changes, told to other servers ---

// deviceChange is a change to one of our users' devices, to be sent as an
// m.device_list_update EDU once its transaction commits.
type deviceChange struct {
	userID, deviceID string
	streamID         int64
	deleted          bool
}

// recordDevice takes the next version of userID's device list for other
// servers, for a change to deviceID, inside tx. A device changed twice in
// one transaction is sent once: its EDU is built after the commit, with
// what the device then is.
func (s *Service) recordDevice(ctx context.Context, tx *database.Tx, ch *changes, userID, deviceID string, deleted bool) error {
	for i, d := range ch.devices {
		if d.userID == userID && d.deviceID == deviceID {
			ch.devices[i].deleted = deleted
			return nil
		}
	}
	var id int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO keys_local_device_streams (user_id, stream_id) VALUES ($1, 1)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = keys_local_device_streams.stream_id + 1
		RETURNING stream_id`, userID).Scan(&id); err != nil {
		return fmt.Errorf("next device list version: %w", err)
	}
	ch.devices = append(ch.devices, deviceChange{userID: userID, deviceID: deviceID, streamID: id, deleted: deleted})
	return nil
}

// recordSigningKeys notes a change of userID's cross-signing keys that
// other servers see: the user-signing key is private to its owner.
func recordSigningKeys(ch *changes, userID string, changed []*newCrossSigningKey) {
	for _, k := range changed {
		if k.typ != typeUserSigning && !slices.Contains(ch.signing, userID) {
			ch.signing = append(ch.signing, userID)
		}
	}
}

// recordSignature notes a new signature on a key of targetUser by signer.
// Other servers see a user's signatures of their own keys (by the
// self-signing key on a device, by a device on the master key); those of
// other users' keys are private to the signer.
func (s *Service) recordSignature(ctx context.Context, tx *database.Tx, ch *changes, signer, targetUser, targetKeyID string) error {
	if signer != targetUser {
		return nil
	}
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM keys_cross_signing_keys
		WHERE user_id = $1 AND key_type = $2 AND public_key = $3`, targetUser, typeMaster, targetKeyID).Scan(&one)
	switch {
	case err == nil:
		if !slices.Contains(ch.signing, targetUser) {
			ch.signing = append(ch.signing, targetUser)
		}
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return s.recordDevice(ctx, tx, ch, targetUser, targetKeyID, false)
	default:
		return fmt.Errorf("find signed key: %w", err)
	}
}

// federate hands the committed changes of a transaction to the federation
// hooks. The EDUs carry the keys as they are now, which is what a later
// /user/devices would answer too.
func (s *Service) federate(ctx context.Context, ch *changes) {
	if s.fed.DeviceListUpdate != nil {
		for _, d := range ch.devices {
			u, err := s.deviceListUpdate(ctx, d)
			if err != nil {
				s.log.WithError(err).WithField("user_id", d.userID).Error("building a device list update")
				continue
			}
			s.fed.DeviceListUpdate(ctx, u)
		}
	}
	if s.fed.SigningKeyUpdate != nil {
		for _, userID := range ch.signing {
			q, err := s.queryForServer(ctx, map[string][]string{userID: {}})
			if err != nil {
				s.log.WithError(err).WithField("user_id", userID).Error("building a signing key update")
				continue
			}
			s.fed.SigningKeyUpdate(ctx, SigningKeyUpdate{UserID: userID,
				MasterKey: q.MasterKeys[userID], SelfSigningKey: q.SelfSigningKeys[userID]})
		}
	}
}

func (s *Service) deviceListUpdate(ctx context.Context, d deviceChange) (gomatrixserverlib.DeviceListUpdateEvent, error) {
	u := gomatrixserverlib.DeviceListUpdateEvent{UserID: d.userID, DeviceID: d.deviceID, StreamID: d.streamID, Deleted: d.deleted}
	if d.streamID > 1 {
		// Versions are handed out in commit order, one at a time.
		u.PrevID = []int64{d.streamID - 1}
	}
	if d.deleted {
		return u, nil
	}
	q, err := s.queryForServer(ctx, map[string][]string{d.userID: {d.deviceID}})
	if err != nil {
		return u, err
	}
	k, ok := q.DeviceKeys[d.userID][d.deviceID]
	if !ok {
		// Deleted since: its own update says so.
		return u, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(k, &obj); err != nil {
		return u, fmt.Errorf("device keys of %s %s: %w", d.userID, d.deviceID, err)
	}
	var unsigned struct {
		Name string `json:"device_display_name"`
	}
	_ = json.Unmarshal(obj["unsigned"], &unsigned)
	delete(obj, "unsigned")
	if u.Keys, err = json.Marshal(obj); err != nil {
		return u, err
	}
	u.DeviceDisplayName = unsigned.Name
	return u, nil
}

// --- Other servers' users' changes ---

// ReceiveDeviceListUpdate takes an m.device_list_update EDU (the caller
// checked that it comes from the user's server). It is applied to the
// cached list when it follows the version we have; one that does not
// marks the list stale, to be fetched again by the next query. Either way
// our users sharing a room with the user hear of the change.
func (s *Service) ReceiveDeviceListUpdate(ctx context.Context, u gomatrixserverlib.DeviceListUpdateEvent) error {
	if _, err := serverOf(u.UserID); err != nil || u.DeviceID == "" {
		return mxerr.InvalidParam("Invalid m.device_list_update")
	}
	return s.withTx(ctx, func(tx *database.Tx, ch *changes) error {
		var have int64
		var stale bool
		err := tx.QueryRowContext(ctx, `SELECT stream_id, stale FROM keys_remote_users WHERE user_id = $1`,
			u.UserID).Scan(&have, &stale)
		if errors.Is(err, sql.ErrNoRows) {
			// Not cached: nothing to update, but clients may have the
			// keys from an earlier query.
			return s.record(ctx, tx, ch, u.UserID)
		}
		if err != nil {
			return fmt.Errorf("cached device list: %w", err)
		}
		if !stale && u.StreamID <= have {
			return nil // seen already
		}
		applied := false
		if !stale && follows(u.PrevID, have) {
			if err := applyDeviceUpdate(ctx, tx, u); err != nil {
				s.log.WithError(err).WithField("user_id", u.UserID).Warn("could not apply a device list update")
			} else {
				applied = true
			}
		}
		if !applied {
			if _, err := tx.ExecContext(ctx, `UPDATE keys_remote_users SET stale = 1 WHERE user_id = $1`, u.UserID); err != nil {
				return fmt.Errorf("mark device list stale: %w", err)
			}
		}
		return s.record(ctx, tx, ch, u.UserID)
	})
}

// follows reports whether an update with prevIDs applies on top of version
// have: it names it, or it is the first update and we have the list
// before any.
func follows(prevIDs []int64, have int64) bool {
	return slices.Contains(prevIDs, have) || (len(prevIDs) == 0 && have == 0)
}

// applyDeviceUpdate applies u to the cached list; an error leaves the
// list to be fetched again.
func applyDeviceUpdate(ctx context.Context, tx *database.Tx, u gomatrixserverlib.DeviceListUpdateEvent) error {
	var name *string
	if u.DeviceDisplayName != "" {
		name = &u.DeviceDisplayName
	}
	switch {
	case u.Deleted:
		if _, err := tx.ExecContext(ctx, `DELETE FROM keys_remote_devices WHERE user_id = $1 AND device_id = $2`,
			u.UserID, u.DeviceID); err != nil {
			return fmt.Errorf("delete remote device: %w", err)
		}
	case present(u.Keys):
		k, err := checkRemoteDeviceKeys(u.Keys, u.UserID, u.DeviceID)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO keys_remote_devices (user_id, device_id, display_name, key_json)
			VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id)
			DO UPDATE SET display_name = excluded.display_name, key_json = excluded.key_json`, u.UserID, u.DeviceID, name, string(k)); err != nil {
			return fmt.Errorf("store remote device: %w", err)
		}
	default:
		// A new device without keys yet, or a new display name.
		if _, err := tx.ExecContext(ctx, `UPDATE keys_remote_devices SET display_name = $3
			WHERE user_id = $1 AND device_id = $2`, u.UserID, u.DeviceID, name); err != nil {
			return fmt.Errorf("rename remote device: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE keys_remote_users SET stream_id = $2 WHERE user_id = $1`,
		u.UserID, u.StreamID); err != nil {
		return fmt.Errorf("device list version: %w", err)
	}
	return nil
}

// ReceiveSigningKeyUpdate takes an m.signing_key_update EDU (the caller
// checked that it comes from the user's server).
func (s *Service) ReceiveSigningKeyUpdate(ctx context.Context, u SigningKeyUpdate) error {
	if _, err := serverOf(u.UserID); err != nil {
		return mxerr.InvalidParam("Invalid m.signing_key_update")
	}
	return s.withTx(ctx, func(tx *database.Tx, ch *changes) error {
		for _, k := range []struct {
			column, typ string
			raw         json.RawMessage
		}{{"master_key", typeMaster, u.MasterKey}, {"self_signing_key", typeSelfSigning, u.SelfSigningKey}} {
			if !present(k.raw) {
				continue
			}
			c, err := checkRemoteCrossSigningKey(k.raw, u.UserID, k.typ)
			if err != nil {
				return err
			}
			// column is one of two constants.
			if _, err := tx.ExecContext(ctx, `UPDATE keys_remote_users SET `+k.column+` = $2 WHERE user_id = $1`,
				u.UserID, string(c)); err != nil {
				return fmt.Errorf("store remote cross-signing key: %w", err)
			}
		}
		return s.record(ctx, tx, ch, u.UserID)
	})
}

// checkRemoteDeviceKeys checks that a remote device's keys are for that
// user and device, and returns them without "unsigned". The signatures
// are the clients' to check.
func checkRemoteDeviceKeys(raw json.RawMessage, userID, deviceID string) (json.RawMessage, error) {
	var dk deviceKeysObject
	if err := json.Unmarshal(raw, &dk); err != nil {
		return nil, fmt.Errorf("device keys of %s %s: %w", userID, deviceID, err)
	}
	if dk.UserID != userID || dk.DeviceID != deviceID {
		return nil, fmt.Errorf("device keys of %s %s are for %s %s", userID, deviceID, dk.UserID, dk.DeviceID)
	}
	return canonical(raw)
}

// checkRemoteCrossSigningKey checks that a remote cross-signing key is the
// user's and of its type.
func checkRemoteCrossSigningKey(raw json.RawMessage, userID, typ string) (json.RawMessage, error) {
	var k crossSigningKeyObject
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, fmt.Errorf("%s key of %s: %w", typ, userID, err)
	}
	if k.UserID != userID || !slices.Contains(k.Usage, typ) || len(k.Keys) == 0 {
		return nil, fmt.Errorf("%s key of %s is not one", typ, userID)
	}
	return canonical(raw)
}

// --- Queries and claims of other servers' users' keys ---

// queryRemote adds to out the keys of other servers' users: devices maps
// each to the device IDs wanted, none meaning all. Servers are asked in
// parallel; those that do not answer are listed in out.Failures.
func (s *Service) queryRemote(ctx context.Context, devices map[string][]string, out *QueryResponse) error {
	byServer := map[string]map[string][]string{}
	for userID, devs := range devices {
		server, err := serverOf(userID)
		if err != nil {
			return err
		}
		if byServer[server] == nil {
			byServer[server] = map[string][]string{}
		}
		byServer[server][userID] = devs
	}
	results := eachServer(ctx, s, byServer, func(ctx context.Context, server string, users map[string][]string) (*ServerQueryResponse, error) {
		return s.queryServer(ctx, spec.ServerName(server), users)
	}, out.Failures)
	for server, res := range results {
		mergeQuery(out, server, byServer[server], res)
	}
	return nil
}

// eachServer runs ask for each server in parallel, each within
// remoteTimeout, and returns the answers of those that gave one. The
// others are logged and listed in failures.
func eachServer[T, R any](ctx context.Context, s *Service, byServer map[string]T,
	ask func(ctx context.Context, server string, req T) (R, error), failures map[string]any) map[string]R {
	out := map[string]R{}
	if len(byServer) == 0 {
		return out
	}
	if s.fed.Client == nil {
		for server := range byServer {
			failures[server] = remoteFailure("Federation is not available on this server")
		}
		return out
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for server, req := range byServer {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, remoteTimeout)
			defer cancel()
			res, err := ask(ctx, server, req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				s.log.WithError(err).WithField("server", server).Warn("asking another server for keys")
				failures[server] = remoteFailure(err.Error())
				return
			}
			out[server] = res
		})
	}
	wg.Wait()
	return out
}

// queryServer gets the keys of users of one server: from the cache for
// those who share a room with us (fetching their device list first if we
// have none, or a stale one), and from a /user/keys/query of the server
// for the others.
func (s *Service) queryServer(ctx context.Context, server spec.ServerName, users map[string][]string) (*ServerQueryResponse, error) {
	out := &ServerQueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{},
		MasterKeys: map[string]json.RawMessage{}, SelfSigningKeys: map[string]json.RawMessage{}}
	ask := map[string][]string{}
	for userID, devs := range users {
		shares := false
		if s.fed.SharesRoom != nil {
			var err error
			if shares, err = s.fed.SharesRoom(ctx, userID); err != nil {
				return nil, err
			}
		}
		if !shares {
			// A list cached while we shared a room gets no updates now:
			// it must not be trusted if we come to share one again.
			if err := s.forget(ctx, userID); err != nil {
				return nil, err
			}
			ask[userID] = devs
			continue
		}
		ud, err := s.cachedDevices(ctx, userID)
		if err != nil {
			return nil, err
		}
		if ud == nil {
			if ud, err = s.resync(ctx, server, userID); err != nil {
				return nil, err
			}
		}
		addUserDevices(out, ud)
	}
	if len(ask) > 0 {
		res, err := s.fed.Client.QueryKeys(ctx, server, ask)
		if err != nil {
			return nil, err
		}
		if res != nil {
			for userID := range ask {
				if k, ok := res.DeviceKeys[userID]; ok {
					out.DeviceKeys[userID] = k
				}
				if k, ok := res.MasterKeys[userID]; ok {
					out.MasterKeys[userID] = k
				}
				if k, ok := res.SelfSigningKeys[userID]; ok {
					out.SelfSigningKeys[userID] = k
				}
			}
		}
	}
	return out, nil
}

// addUserDevices adds a device list to a query answer, the display names
// in each device's "unsigned", as the client API shows them.
func addUserDevices(out *ServerQueryResponse, ud *UserDevices) {
	devs := map[string]json.RawMessage{}
	for _, d := range ud.Devices {
		k := d.Keys
		if d.DisplayName != nil {
			if withName, err := withSignatures(k, nil, map[string]any{"device_display_name": *d.DisplayName}); err == nil {
				k = withName
			}
		}
		devs[d.DeviceID] = k
	}
	out.DeviceKeys[ud.UserID] = devs
	if present(ud.MasterKey) {
		out.MasterKeys[ud.UserID] = ud.MasterKey
	}
	if present(ud.SelfSigningKey) {
		out.SelfSigningKeys[ud.UserID] = ud.SelfSigningKey
	}
}

// mergeQuery adds what a server answered about its users to out: only the
// users asked about, the devices wanted, and keys that say they are theirs.
func mergeQuery(out *QueryResponse, server string, users map[string][]string, res *ServerQueryResponse) {
	for userID, wanted := range users {
		if devs, ok := res.DeviceKeys[userID]; ok {
			keep := map[string]json.RawMessage{}
			for deviceID, k := range devs {
				if len(wanted) > 0 && !slices.Contains(wanted, deviceID) {
					continue
				}
				if _, err := checkRemoteDeviceKeys(k, userID, deviceID); err != nil {
					continue
				}
				keep[deviceID] = k
			}
			out.DeviceKeys[userID] = keep
		}
		if k, ok := res.MasterKeys[userID]; ok {
			if _, err := checkRemoteCrossSigningKey(k, userID, typeMaster); err == nil {
				out.MasterKeys[userID] = k
			}
		}
		if k, ok := res.SelfSigningKeys[userID]; ok {
			if _, err := checkRemoteCrossSigningKey(k, userID, typeSelfSigning); err == nil {
				out.SelfSigningKeys[userID] = k
			}
		}
	}
}

// cachedDevices returns a remote user's cached device list, or nil if
// there is none or it is stale.
func (s *Service) cachedDevices(ctx context.Context, userID string) (*UserDevices, error) {
	ud := &UserDevices{UserID: userID, Devices: []UserDevice{}}
	var stale bool
	var master, ssk string
	err := s.db.QueryRowContext(ctx, `SELECT stream_id, stale, master_key, self_signing_key FROM keys_remote_users
		WHERE user_id = $1`, userID).Scan(&ud.StreamID, &stale, &master, &ssk)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && stale) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cached device list: %w", err)
	}
	ud.MasterKey, ud.SelfSigningKey = rawOrNil(master), rawOrNil(ssk)
	rows, err := s.db.QueryContext(ctx, `SELECT device_id, display_name, key_json FROM keys_remote_devices
		WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("cached devices: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d UserDevice
		var js string
		if err := rows.Scan(&d.DeviceID, &d.DisplayName, &js); err != nil {
			return nil, fmt.Errorf("cached devices: %w", err)
		}
		d.Keys = json.RawMessage(js)
		ud.Devices = append(ud.Devices, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cached devices: %w", err)
	}
	return ud, nil
}

func rawOrNil(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// MarkStale marks remote users' cached device lists stale, to be fetched
// again by the next query: for users we come to share a room with, whose
// servers sent us no updates while we shared none (a cache kept from an
// earlier shared room may have missed changes).
func (s *Service) MarkStale(ctx context.Context, userIDs []string) error {
	for _, u := range userIDs {
		if _, err := s.db.ExecContext(ctx, `UPDATE keys_remote_users SET stale = 1 WHERE user_id = $1 AND stale = 0`, u); err != nil {
			return fmt.Errorf("mark device list of %s stale: %w", u, err)
		}
	}
	return nil
}

// forget drops a remote user's cached device list, if there is one.
func (s *Service) forget(ctx context.Context, userID string) error {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM keys_remote_users WHERE user_id = $1`, userID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cached device list: %w", err)
	}
	return s.withTx(ctx, func(tx *database.Tx, _ *changes) error {
		for _, q := range []string{
			`DELETE FROM keys_remote_devices WHERE user_id = $1`,
			`DELETE FROM keys_remote_users WHERE user_id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, userID); err != nil {
				return fmt.Errorf("forget cached device list: %w", err)
			}
		}
		return nil
	})
}

// resync fetches a remote user's device list from their server and caches
// it, unless an update newer than the answer arrived meanwhile (then the
// list stays stale, for the next query). Devices whose keys are not
// theirs are left out.
func (s *Service) resync(ctx context.Context, server spec.ServerName, userID string) (*UserDevices, error) {
	res, err := s.fed.Client.UserDevices(ctx, server, userID)
	if err != nil {
		return nil, err
	}
	if res == nil || res.UserID != userID {
		return nil, fmt.Errorf("%s answered /user/devices for another user", server)
	}
	ud := &UserDevices{UserID: userID, StreamID: res.StreamID, Devices: []UserDevice{}}
	if present(res.MasterKey) {
		if ud.MasterKey, err = checkRemoteCrossSigningKey(res.MasterKey, userID, typeMaster); err != nil {
			ud.MasterKey = nil
		}
	}
	if present(res.SelfSigningKey) {
		if ud.SelfSigningKey, err = checkRemoteCrossSigningKey(res.SelfSigningKey, userID, typeSelfSigning); err != nil {
			ud.SelfSigningKey = nil
		}
	}
	for _, d := range res.Devices {
		k, err := checkRemoteDeviceKeys(d.Keys, userID, d.DeviceID)
		if err != nil {
			continue
		}
		ud.Devices = append(ud.Devices, UserDevice{DeviceID: d.DeviceID, Keys: k, DisplayName: d.DisplayName})
	}
	sort.Slice(ud.Devices, func(i, j int) bool { return ud.Devices[i].DeviceID < ud.Devices[j].DeviceID })
	err = s.withTx(ctx, func(tx *database.Tx, _ *changes) error {
		var have int64
		err := tx.QueryRowContext(ctx, `SELECT stream_id FROM keys_remote_users WHERE user_id = $1`, userID).Scan(&have)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("cached device list: %w", err)
		}
		if err == nil && have > ud.StreamID {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM keys_remote_devices WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("replace cached devices: %w", err)
		}
		for _, d := range ud.Devices {
			if _, err := tx.ExecContext(ctx, `INSERT INTO keys_remote_devices (user_id, device_id, display_name, key_json)
				VALUES ($1, $2, $3, $4)`, userID, d.DeviceID, d.DisplayName, string(d.Keys)); err != nil {
				return fmt.Errorf("cache device: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO keys_remote_users
			(user_id, stream_id, stale, master_key, self_signing_key) VALUES ($1, $2, 0, $3, $4)
			ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, stale = excluded.stale,
			master_key = excluded.master_key, self_signing_key = excluded.self_signing_key`,
			userID, ud.StreamID, string(ud.MasterKey), string(ud.SelfSigningKey)); err != nil {
			return fmt.Errorf("cache device list: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ud, nil
}

// claimRemote claims one-time keys of other servers' users' devices
// (user -> device -> algorithm) from their servers, in parallel, adding
// them to out; servers that do not answer are listed in out.Failures.
func (s *Service) claimRemote(ctx context.Context, req map[string]map[string]string, out *ClaimResponse) {
	byServer := map[string]map[string]map[string]string{}
	for userID, devs := range req {
		server, err := serverOf(userID)
		if err != nil {
			continue // Claim checked them
		}
		if byServer[server] == nil {
			byServer[server] = map[string]map[string]string{}
		}
		byServer[server][userID] = devs
	}
	results := eachServer(ctx, s, byServer, func(ctx context.Context, server string, users map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
		return s.fed.Client.ClaimKeys(ctx, spec.ServerName(server), users)
	}, out.Failures)
	if out.OneTimeKeys == nil {
		out.OneTimeKeys = map[string]map[string]map[string]json.RawMessage{}
	}
	for server, res := range results {
		// Only what was asked of the server: its users and their devices.
		for userID, devs := range byServer[server] {
			for deviceID := range devs {
				keys, ok := res[userID][deviceID]
				if !ok {
					continue
				}
				if out.OneTimeKeys[userID] == nil {
					out.OneTimeKeys[userID] = map[string]map[string]json.RawMessage{}
				}
				out.OneTimeKeys[userID][deviceID] = keys
			}
		}
	}
}
