// Package keys is the end-to-end encryption key store: device keys,
// one-time and fallback keys, cross-signing keys and their signatures, and
// the device list stream that tells users whose keys changed.
// https://spec.matrix.org/v1.19/client-server-api/#end-to-end-encryption
package keys

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/gencache"
	"github.com/tessera-hs/tessera/internal/streampos"
	"github.com/tessera-hs/tessera/users"
)

// Service is the key store.
type Service struct {
	db       *database.DB
	users    *users.Service
	log      logrus.FieldLogger
	onChange func(ctx context.Context, userID string)
	onClaim  func(ctx context.Context, claimed map[string][]string)
	// pos is the device list stream's latest committed position.
	pos streampos.Position
	// otkCounts and fallbackTypes cache each device's one-time key counts
	// and unused fallback key types, which every /sync carries: they change
	// only when keys are uploaded or claimed, and every key store
	// transaction invalidates them once it has committed.
	otkCounts     *gencache.Cache[string, map[string]int]
	fallbackTypes *gencache.Cache[string, []string]
	// fed reaches other servers' key stores and tells them of our users'
	// changes (remote.go); its zero value is "no federation".
	fed Federation
	// announce and follower share the device list stream and the key
	// caches with the other processes of a deployment (cluster.go); nil
	// for one process.
	announce Announcer
	follower *streampos.Follower
}

// streamDeviceLists is the name of the device list stream in
// keys_stream_positions.
const streamDeviceLists = "device_lists"

// New runs the keys domain's migrations and builds the service.
func New(ctx context.Context, db *database.DB, us *users.Service, log logrus.FieldLogger) (*Service, error) {
	if err := db.Migrate(ctx, "keys", migrations); err != nil {
		return nil, err
	}
	s := &Service{db: db, users: us, log: log,
		otkCounts:     gencache.New[string, map[string]int](20000),
		fallbackTypes: gencache.New[string, []string](20000)}
	var pos int64
	if err := db.QueryRowContext(ctx, `SELECT pos FROM keys_stream_positions WHERE stream = $1`,
		streamDeviceLists).Scan(&pos); err != nil {
		return nil, fmt.Errorf("load device list position: %w", err)
	}
	s.pos.Advance(pos)
	return s, nil
}

// SetChangeHook installs f, called after the commit of every change to a
// user's device list (device keys uploaded or deleted, cross-signing keys
// or signatures changed), so that sync can wake those who share a room
// with them. Call it once, before serving requests.
func (s *Service) SetChangeHook(f func(ctx context.Context, userID string)) { s.onChange = f }

// SetClaimHook installs f, called after one-time or fallback keys of our
// users' devices were claimed, with those devices (user ID to device
// IDs): a device that does not sync (an application service's, MSC3202)
// learns its new counts only by being told. Call it once, before serving
// requests.
func (s *Service) SetClaimHook(f func(ctx context.Context, claimed map[string][]string)) {
	s.onClaim = f
}

// StreamPos is the device list stream's latest committed position.
func (s *Service) StreamPos() int64 { return s.pos.Load() }

// changes collects the users whose device list a transaction changed.
type changes struct {
	users []string
	// devices and signing are our users' changes other servers must be
	// told of (remote.go).
	devices []deviceChange
	signing []string
	// last is the last device list position taken; 0 for none.
	last int64
}

// record takes the next device list position for userID inside tx (once
// per user and transaction) and publishes it when tx commits.
func (s *Service) record(ctx context.Context, tx *database.Tx, ch *changes, userID string) error {
	if slices.Contains(ch.users, userID) {
		return nil
	}
	var pos int64
	if err := tx.QueryRowContext(ctx, `UPDATE keys_stream_positions SET pos = pos + 1 WHERE stream = $1 RETURNING pos`,
		streamDeviceLists).Scan(&pos); err != nil {
		return fmt.Errorf("next device list position: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO keys_device_list_changes (pos, user_id) VALUES ($1, $2)`,
		pos, userID); err != nil {
		return fmt.Errorf("record device list change: %w", err)
	}
	tx.AfterCommit(func() { s.pos.Advance(pos) })
	ch.users = append(ch.users, userID)
	ch.last = pos
	return nil
}

// withTx runs fn in a write transaction and, once it has committed, calls
// the change hook for every user whose device list it changed.
func (s *Service) withTx(ctx context.Context, fn func(tx *database.Tx, ch *changes) error) error {
	var ch changes
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		ch = changes{}
		// Whatever the transaction changes, cached key counts go.
		tx.AfterCommit(s.otkCounts.Invalidate)
		tx.AfterCommit(s.fallbackTypes.Invalidate)
		if err := fn(tx, &ch); err != nil {
			return err
		}
		if s.announce != nil {
			// The other processes' caches go too, and they follow the
			// device list stream (cluster.go).
			return s.announce(ctx, tx, ch.last)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if s.onChange != nil {
		for _, u := range ch.users {
			s.onChange(context.WithoutCancel(ctx), u)
		}
	}
	s.federate(context.WithoutCancel(ctx), &ch)
	return nil
}

// ChangedUsers lists the users whose device list changed at a position in
// (from, to].
func (s *Service) ChangedUsers(ctx context.Context, from, to int64) ([]string, error) {
	out, err := database.Strings(ctx, s.db, `SELECT DISTINCT user_id FROM keys_device_list_changes
		WHERE pos > $1 AND pos <= $2 ORDER BY user_id`, from, to)
	if err != nil {
		return nil, fmt.Errorf("changed users: %w", err)
	}
	return out, nil
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys by algorithm.
func (s *Service) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	key := userID + "\x00" + deviceID
	if c, ok := s.otkCounts.Get(key); ok {
		return maps.Clone(c), nil
	}
	gen := s.otkCounts.Generation()
	counts, err := oneTimeKeyCounts(ctx, s.db, userID, deviceID)
	if err != nil {
		return nil, err
	}
	s.otkCounts.Put(key, gen, maps.Clone(counts))
	return counts, nil
}

// oneTimeKeyCounts counts a device's unclaimed one-time keys by algorithm.
// signed_curve25519 is always there, 0 when none are left, as Synapse does:
// clients (libolm-based ones notably) take a missing count for "unknown"
// rather than zero, in /keys/upload's answer and in /sync alike.
func oneTimeKeyCounts(ctx context.Context, q database.Querier, userID, deviceID string) (map[string]int, error) {
	rows, err := q.QueryContext(ctx, `SELECT algorithm, COUNT(*) FROM keys_one_time_keys
		WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("count one-time keys: %w", err)
	}
	defer rows.Close()
	counts := map[string]int{"signed_curve25519": 0}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, fmt.Errorf("count one-time keys: %w", err)
		}
		counts[alg] = n
	}
	return counts, rows.Err()
}

// UnusedFallbackKeyTypes lists the algorithms of a device's fallback keys
// that have not been used.
func (s *Service) UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	key := userID + "\x00" + deviceID
	if t, ok := s.fallbackTypes.Get(key); ok {
		return slices.Clone(t), nil
	}
	gen := s.fallbackTypes.Generation()
	out, err := unusedFallbackKeyTypes(ctx, s.db, userID, deviceID)
	if err != nil {
		return nil, err
	}
	s.fallbackTypes.Put(key, gen, slices.Clone(out))
	return out, nil
}

func unusedFallbackKeyTypes(ctx context.Context, db *database.DB, userID, deviceID string) ([]string, error) {
	out, err := database.Strings(ctx, db, `SELECT algorithm FROM keys_fallback_keys
		WHERE user_id = $1 AND device_id = $2 AND used = 0 ORDER BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("unused fallback keys: %w", err)
	}
	return out, nil
}

// DevicesDeleted deletes the keys of deleted devices and records the
// change of their user's device list.
func (s *Service) DevicesDeleted(ctx context.Context, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	return s.withTx(ctx, func(tx *database.Tx, ch *changes) error {
		for _, d := range deviceIDs {
			for _, q := range []string{
				`DELETE FROM keys_device_keys WHERE user_id = $1 AND device_id = $2`,
				`DELETE FROM keys_one_time_keys WHERE user_id = $1 AND device_id = $2`,
				`DELETE FROM keys_fallback_keys WHERE user_id = $1 AND device_id = $2`,
				`DELETE FROM keys_signatures WHERE target_user_id = $1 AND target_key_id = $2`,
				`DELETE FROM keys_signatures WHERE signer_user_id = $1 AND signer_key_id = 'ed25519:' || $2`,
			} {
				if _, err := tx.ExecContext(ctx, q, userID, d); err != nil {
					return fmt.Errorf("delete device keys: %w", err)
				}
			}
			if err := s.recordDevice(ctx, tx, ch, userID, d, true); err != nil {
				return err
			}
		}
		return s.record(ctx, tx, ch, userID)
	})
}

// UserDeactivated deletes a deactivated user's cross-signing keys and every
// signature they made or that was made on their keys, as Synapse does: an
// account that can never log in again must not keep vouching for anyone.
// (Their devices, and with them the device keys, are deleted through
// DevicesDeleted.) The users whose keys lose a signature are told their
// device list changed.
func (s *Service) UserDeactivated(ctx context.Context, userID string) error {
	return s.withTx(ctx, func(tx *database.Tx, ch *changes) error {
		targets, err := database.Strings(ctx, tx, `SELECT DISTINCT target_user_id FROM keys_signatures
			WHERE signer_user_id = $1 AND target_user_id != $1`, userID)
		if err != nil {
			return fmt.Errorf("signatures of a deactivated user: %w", err)
		}
		for _, q := range []string{
			`DELETE FROM keys_cross_signing_keys WHERE user_id = $1`,
			`DELETE FROM keys_signatures WHERE target_user_id = $1 OR signer_user_id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, userID); err != nil {
				return fmt.Errorf("delete cross-signing keys: %w", err)
			}
		}
		for _, u := range append(targets, userID) {
			if err := s.record(ctx, tx, ch, u); err != nil {
				return err
			}
		}
		return nil
	})
}
