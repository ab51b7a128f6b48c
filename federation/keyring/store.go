package keyring

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
)

// maxCachedKeys bounds the in-memory cache. Past it an arbitrary entry is
// dropped for each new one: the database still has them all.
const maxCachedKeys = 10000

// Store is a gomatrixserverlib.KeyDatabase in SQLite with an in-memory
// cache in front: verifying a request or an event looks its server's key up
// here first, so the common case touches neither the database nor the
// network.
type Store struct {
	db *database.DB

	mu    sync.RWMutex
	cache map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult
}

var _ gomatrixserverlib.KeyDatabase = (*Store)(nil)

// NewStore runs the key ring's migrations and returns its store.
func NewStore(ctx context.Context, db *database.DB) (*Store, error) {
	if err := db.Migrate(ctx, "federation_keyring", migrations); err != nil {
		return nil, err
	}
	return &Store{
		db:    db,
		cache: map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{},
	}, nil
}

// FetcherName implements gomatrixserverlib.KeyFetcher.
func (s *Store) FetcherName() string { return "keyring database" }

// FetchKeys returns the stored keys among those requested, however old:
// the key ring decides from their validity whether to fetch them again.
func (s *Store) FetchKeys(
	ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp,
) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	results := make(map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, len(requests))
	var misses []gomatrixserverlib.PublicKeyLookupRequest
	s.mu.RLock()
	for req := range requests {
		if res, ok := s.cache[req]; ok {
			results[req] = res
		} else {
			misses = append(misses, req)
		}
	}
	s.mu.RUnlock()
	for _, req := range misses {
		var pub string
		var validUntil, expired int64
		err := s.db.QueryRowContext(ctx, `SELECT public_key, valid_until_ts, expired_ts FROM server_signing_keys
			WHERE server_name = $1 AND key_id = $2`, string(req.ServerName), string(req.KeyID)).
			Scan(&pub, &validUntil, &expired)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read key %s of %s: %w", req.KeyID, req.ServerName, err)
		}
		key, err := base64.RawStdEncoding.DecodeString(pub)
		if err != nil {
			return nil, fmt.Errorf("read key %s of %s: bad base64 in the database: %w", req.KeyID, req.ServerName, err)
		}
		res := gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: key},
			ValidUntilTS: spec.Timestamp(validUntil),
			ExpiredTS:    spec.Timestamp(expired),
		}
		results[req] = res
		s.remember(req, res)
	}
	return results, nil
}

// StoreKeys implements gomatrixserverlib.KeyDatabase. The key ring calls it
// with every key it used, fetched or not; keys already stored unchanged
// are skipped.
func (s *Store) StoreKeys(
	ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult,
) error {
	return s.storeKeys(ctx, results, func(gomatrixserverlib.PublicKeyLookupRequest) spec.ServerName { return "" })
}

// storeKeys upserts keys, recording where each came from (source returns
// "" when not known, which keeps what was recorded before). A result never
// replaces a stored one that is valid for longer, unless it marks the key
// as expired: a stale answer from a notary must not shorten a key's life.
func (s *Store) storeKeys(
	ctx context.Context,
	results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult,
	source func(gomatrixserverlib.PublicKeyLookupRequest) spec.ServerName,
) error {
	changed := make(map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, len(results))
	s.mu.RLock()
	for req, res := range results {
		if old, ok := s.cache[req]; !ok || !sameKey(old, res) {
			changed[req] = res
		}
	}
	s.mu.RUnlock()
	if len(changed) == 0 {
		return nil
	}
	now := time.Now().UnixMilli()
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		for req, res := range changed {
			r, err := tx.ExecContext(ctx, `INSERT INTO server_signing_keys
				(server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_from, fetched_ts)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (server_name, key_id) DO UPDATE SET
					public_key = excluded.public_key,
					valid_until_ts = excluded.valid_until_ts,
					expired_ts = excluded.expired_ts,
					fetched_from = COALESCE(NULLIF(excluded.fetched_from, ''), server_signing_keys.fetched_from),
					fetched_ts = excluded.fetched_ts
				WHERE excluded.valid_until_ts >= server_signing_keys.valid_until_ts OR excluded.expired_ts <> 0`,
				string(req.ServerName), string(req.KeyID), base64.RawStdEncoding.EncodeToString(res.Key),
				int64(res.ValidUntilTS), int64(res.ExpiredTS), string(source(req)), now)
			if err != nil {
				return fmt.Errorf("store key %s of %s: %w", req.KeyID, req.ServerName, err)
			}
			if n, _ := r.RowsAffected(); n > 0 {
				tx.AfterCommit(func() { s.remember(req, res) })
			} else {
				// The stored key won; read it again when next needed.
				tx.AfterCommit(func() { s.forget(req) })
			}
		}
		return nil
	})
}

func sameKey(a, b gomatrixserverlib.PublicKeyLookupResult) bool {
	return bytes.Equal(a.Key, b.Key) && a.ValidUntilTS == b.ValidUntilTS && a.ExpiredTS == b.ExpiredTS
}

func (s *Store) remember(req gomatrixserverlib.PublicKeyLookupRequest, res gomatrixserverlib.PublicKeyLookupResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.cache[req]; !ok && len(s.cache) >= maxCachedKeys {
		for k := range s.cache { // map order is random: a random eviction
			delete(s.cache, k)
			break
		}
	}
	s.cache[req] = res
}

func (s *Store) forget(req gomatrixserverlib.PublicKeyLookupRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cache, req)
}

// storedResponse is a server's own signed key response as stored under
// one of the key IDs it lists.
type storedResponse struct {
	keyID      gomatrixserverlib.KeyID
	json       []byte
	validUntil spec.Timestamp
	fetched    time.Time
}

// storeResponse records a key response a server gave us itself, under each
// key ID it lists, replacing older responses for those keys.
func (s *Store) storeResponse(ctx context.Context, keys gomatrixserverlib.ServerKeys, fetched time.Time) error {
	ids := make([]gomatrixserverlib.KeyID, 0, len(keys.VerifyKeys)+len(keys.OldVerifyKeys))
	for id := range keys.VerifyKeys {
		ids = append(ids, id)
	}
	for id := range keys.OldVerifyKeys {
		ids = append(ids, id)
	}
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		for _, id := range ids {
			_, err := tx.ExecContext(ctx, `INSERT INTO server_key_responses
				(server_name, key_id, response_json, valid_until_ts, fetched_ts) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (server_name, key_id) DO UPDATE SET
					response_json = excluded.response_json,
					valid_until_ts = excluded.valid_until_ts,
					fetched_ts = excluded.fetched_ts`,
				string(keys.ServerName), string(id), string(keys.Raw), int64(keys.ValidUntilTS), fetched.UnixMilli())
			if err != nil {
				return fmt.Errorf("store key response of %s: %w", keys.ServerName, err)
			}
		}
		return nil
	})
}

// responses returns the stored responses of server, one per key ID,
// newest first.
func (s *Store) responses(ctx context.Context, server spec.ServerName) ([]storedResponse, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key_id, response_json, valid_until_ts, fetched_ts
		FROM server_key_responses WHERE server_name = $1 ORDER BY fetched_ts DESC, key_id`, string(server))
	if err != nil {
		return nil, fmt.Errorf("read key responses of %s: %w", server, err)
	}
	defer rows.Close()
	var out []storedResponse
	for rows.Next() {
		var id, js string
		var validUntil, fetched int64
		if err := rows.Scan(&id, &js, &validUntil, &fetched); err != nil {
			return nil, fmt.Errorf("read key responses of %s: %w", server, err)
		}
		out = append(out, storedResponse{
			keyID: gomatrixserverlib.KeyID(id), json: []byte(js),
			validUntil: spec.Timestamp(validUntil), fetched: time.UnixMilli(fetched),
		})
	}
	return out, rows.Err()
}
