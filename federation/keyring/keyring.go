// Package keyring holds other servers' signing keys: it fetches them (from
// the servers themselves, or from trusted notaries), keeps them in SQLite
// with a cache in front, verifies signatures with them, and answers notary
// queries for them.
// https://spec.matrix.org/v1.19/server-server-api/#retrieving-server-keys
package keyring

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
)

// Config is what the key ring needs to know about us and whom to trust.
type Config struct {
	// Our server name and public key: requests for our own key are
	// answered from these, never over the network.
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	PublicKey  ed25519.PublicKey
	// KeyValidity is how long our key is announced as valid.
	KeyValidity time.Duration
	// TrustedKeyServers are asked, in order, for keys that a server does
	// not give us itself.
	TrustedKeyServers []TrustedKeyServer
	// Allowed reports whether we may contact a server (the allow and deny
	// lists); nil allows every server. Keys of a refused server are not
	// fetched, so nothing it signed verifies.
	Allowed func(spec.ServerName) bool
}

// TrustedKeyServer is a notary and the keys its answers must be signed with.
type TrustedKeyServer struct {
	ServerName spec.ServerName
	Keys       map[gomatrixserverlib.KeyID]ed25519.PublicKey
}

// NewTrustedKeyServer decodes a notary as the config file gives it: key IDs
// to unpadded base64 ed25519 public keys.
func NewTrustedKeyServer(serverName string, keys map[string]string) (TrustedKeyServer, error) {
	ts := TrustedKeyServer{ServerName: spec.ServerName(serverName), Keys: map[gomatrixserverlib.KeyID]ed25519.PublicKey{}}
	for id, pub := range keys {
		raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(pub, "="))
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return TrustedKeyServer{}, fmt.Errorf("trusted key server %s: key %s is not a base64 ed25519 public key", serverName, id)
		}
		ts.Keys[gomatrixserverlib.KeyID(id)] = raw
	}
	return ts, nil
}

const (
	// fetchTimeout bounds one notary fetch of a server's keys.
	fetchTimeout = 15 * time.Second
	// minRefetchInterval: a server's keys are fetched at most this often
	// for notary queries, which anyone may send; without it a stream of
	// queries with a far minimum_valid_until_ts would be a stream of
	// requests to that server.
	minRefetchInterval = time.Minute
)

// KeyRing verifies signatures with other servers' keys. It is a
// gomatrixserverlib.JSONVerifier through its embedded
// *gomatrixserverlib.KeyRing, which looks keys up in the Store and, for
// those missing or past their valid_until_ts, asks the server itself, then
// each trusted key server in turn.
type KeyRing struct {
	*gomatrixserverlib.KeyRing

	cfg    Config
	store  *Store
	client gomatrixserverlib.KeyClient
	log    logrus.FieldLogger
}

// New builds the key ring on db. client fetches keys over federation
// (an fclient.FederationClient).
func New(ctx context.Context, db *database.DB, cfg Config, client gomatrixserverlib.KeyClient, log logrus.FieldLogger) (*KeyRing, error) {
	store, err := NewStore(ctx, db)
	if err != nil {
		return nil, err
	}
	k := &KeyRing{cfg: cfg, store: store, client: client, log: log}
	direct := &gomatrixserverlib.DirectKeyFetcher{
		// Recording the responses lets us answer notary queries for
		// servers whose keys we fetched to verify something.
		Client:            recordingClient{KeyClient: client, k: k},
		IsLocalServerName: k.isLocal,
		LocalPublicKey:    spec.Base64Bytes(cfg.PublicKey),
	}
	fetchers := []gomatrixserverlib.KeyFetcher{&sourcedFetcher{KeyFetcher: direct, k: k}}
	for _, ts := range cfg.TrustedKeyServers {
		fetchers = append(fetchers, &sourcedFetcher{
			KeyFetcher: &gomatrixserverlib.PerspectiveKeyFetcher{
				PerspectiveServerName: ts.ServerName,
				PerspectiveServerKeys: ts.Keys,
				Client:                client,
			},
			notary: ts.ServerName,
			k:      k,
		})
	}
	k.KeyRing = &gomatrixserverlib.KeyRing{KeyFetchers: fetchers, KeyDatabase: &keyDatabase{k: k}}
	return k, nil
}

// Store is the key ring's database.
func (k *KeyRing) Store() *Store { return k.store }

func (k *KeyRing) isLocal(s spec.ServerName) bool { return s == k.cfg.ServerName }

func (k *KeyRing) allowed(s spec.ServerName) bool { return k.cfg.Allowed == nil || k.cfg.Allowed(s) }

// localKey is our own key as the key ring uses it: valid for KeyValidity
// from now, as we publish it.
func (k *KeyRing) localKey() gomatrixserverlib.PublicKeyLookupResult {
	return gomatrixserverlib.PublicKeyLookupResult{
		VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(k.cfg.PublicKey)},
		ValidUntilTS: spec.AsTimestamp(time.Now().Add(k.cfg.KeyValidity)),
		ExpiredTS:    gomatrixserverlib.PublicKeyNotExpired,
	}
}

// NotaryKeys answers a notary query for one server: the responses the
// server gave us itself, still signed by it, that list one of keyIDs (any
// key when keyIDs is empty). Stored responses are used while they are
// valid until minValidUntil and younger than half their lifetime, as the
// spec suggests; otherwise the server is asked again, and when it cannot
// be reached the stored responses are returned however old, so that old
// signatures can still be checked. Our own server and refused servers get
// no answer: the caller publishes our keys itself.
// https://spec.matrix.org/v1.19/server-server-api/#querying-keys-through-another-server
func (k *KeyRing) NotaryKeys(
	ctx context.Context, server spec.ServerName, keyIDs []gomatrixserverlib.KeyID, minValidUntil spec.Timestamp,
) ([]gomatrixserverlib.ServerKeys, error) {
	if _, _, ok := spec.ParseAndValidateServerName(server); !ok || k.isLocal(server) || !k.allowed(server) {
		return nil, nil
	}
	stored, err := k.store.responses(ctx, server)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var fresh []byte
	if !satisfied(stored, keyIDs, minValidUntil, now) {
		fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
		keys, err := k.fetchDirect(fctx, server)
		cancel()
		if err != nil {
			// Not an error for the caller: the stored responses, if
			// any, are the answer.
			k.log.WithError(err).WithField("server", server).Info("notary: could not fetch keys; answering from the database")
		} else {
			fresh = keys.Raw
			if stored, err = k.store.responses(ctx, server); err != nil {
				return nil, err
			}
		}
	}
	return selectResponses(stored, keyIDs, fresh)
}

// satisfied reports whether stored responses answer the query without
// asking the server again.
func satisfied(stored []storedResponse, keyIDs []gomatrixserverlib.KeyID, minValidUntil spec.Timestamp, now time.Time) bool {
	if len(stored) == 0 {
		return false
	}
	if now.Sub(stored[0].fetched) < minRefetchInterval {
		return true
	}
	ok := func(r storedResponse) bool {
		halfLife := r.fetched.Add(r.validUntil.Time().Sub(r.fetched) / 2)
		return r.validUntil >= minValidUntil && now.Before(halfLife)
	}
	if len(keyIDs) == 0 {
		return ok(stored[0])
	}
	for _, id := range keyIDs {
		found := false
		for _, r := range stored {
			if r.keyID == id && ok(r) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// selectResponses picks the stored responses listing one of keyIDs (all
// when empty), plus a just-fetched response even when it lists none of
// them (which tells the asker that the key is unknown), without duplicates.
func selectResponses(stored []storedResponse, keyIDs []gomatrixserverlib.KeyID, fresh []byte) ([]gomatrixserverlib.ServerKeys, error) {
	want := make(map[gomatrixserverlib.KeyID]bool, len(keyIDs))
	for _, id := range keyIDs {
		want[id] = true
	}
	seen := map[string]bool{}
	var out []gomatrixserverlib.ServerKeys
	add := func(raw []byte) error {
		if seen[string(raw)] {
			return nil
		}
		seen[string(raw)] = true
		var keys gomatrixserverlib.ServerKeys
		if err := json.Unmarshal(raw, &keys); err != nil {
			return fmt.Errorf("decode stored key response: %w", err)
		}
		out = append(out, keys)
		return nil
	}
	if fresh != nil {
		if err := add(fresh); err != nil {
			return nil, err
		}
	}
	for _, r := range stored {
		if len(want) == 0 || want[r.keyID] {
			if err := add(r.json); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// fetchDirect asks a server for its keys and records the response (see
// record).
func (k *KeyRing) fetchDirect(ctx context.Context, server spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	keys, err := k.client.GetServerKeys(ctx, server)
	if err != nil {
		return keys, fmt.Errorf("fetch keys of %s: %w", server, err)
	}
	if err := k.record(ctx, server, keys, true); err != nil {
		return keys, err
	}
	return keys, nil
}

// record keeps a response a server gave us itself, once it has checked
// out: for the server's name, and signed by every key it lists. Expired
// responses are kept too: they still verify old events. withKeys also
// stores the keys themselves for the key ring (the key ring's own fetches
// store those through sourcedFetcher).
func (k *KeyRing) record(ctx context.Context, server spec.ServerName, keys gomatrixserverlib.ServerKeys, withKeys bool) error {
	checks, _ := gomatrixserverlib.CheckKeys(server, time.Unix(0, 0), keys)
	if !checks.AllChecksOK || len(keys.Raw) == 0 {
		return fmt.Errorf("keys of %s: the response failed its checks (wrong server name or bad signature)", server)
	}
	now := time.Now()
	if err := k.store.storeResponse(ctx, keys, now); err != nil {
		return err
	}
	if !withKeys {
		return nil
	}
	results := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	for id, key := range keys.VerifyKeys {
		results[gomatrixserverlib.PublicKeyLookupRequest{ServerName: server, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: key, ValidUntilTS: keys.ValidUntilTS, ExpiredTS: gomatrixserverlib.PublicKeyNotExpired,
		}
	}
	for id, key := range keys.OldVerifyKeys {
		results[gomatrixserverlib.PublicKeyLookupRequest{ServerName: server, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: key.VerifyKey, ValidUntilTS: gomatrixserverlib.PublicKeyNotValid, ExpiredTS: key.ExpiredTS,
		}
	}
	return k.store.storeKeys(ctx, results, func(gomatrixserverlib.PublicKeyLookupRequest) spec.ServerName { return server })
}

// keyDatabase is the key ring's KeyDatabase: our own key from the config,
// everything else from the Store. Our key is never stored, so a rotated
// key file takes effect at once.
type keyDatabase struct{ k *KeyRing }

func (d *keyDatabase) FetcherName() string { return "keyring database" }

func (d *keyDatabase) FetchKeys(
	ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp,
) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	remote := make(map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp, len(requests))
	var local []gomatrixserverlib.PublicKeyLookupRequest
	for req, ts := range requests {
		if d.k.isLocal(req.ServerName) {
			local = append(local, req)
		} else {
			remote[req] = ts
		}
	}
	results, err := d.k.store.FetchKeys(ctx, remote)
	if err != nil {
		return nil, err
	}
	for _, req := range local {
		// Any other key ID of ours is unknown: the signature is bad.
		if req.KeyID == d.k.cfg.KeyID {
			results[req] = d.k.localKey()
		}
	}
	return results, nil
}

func (d *keyDatabase) StoreKeys(
	ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult,
) error {
	remote := make(map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, len(results))
	for req, res := range results {
		if !d.k.isLocal(req.ServerName) {
			remote[req] = res
		}
	}
	return d.k.store.StoreKeys(ctx, remote)
}

// sourcedFetcher wraps a fetcher: it never asks about our own server or a
// refused one, and it stores what it fetched together with where from
// (notary, or each key's own server when notary is empty).
type sourcedFetcher struct {
	gomatrixserverlib.KeyFetcher
	notary spec.ServerName
	k      *KeyRing
}

func (f *sourcedFetcher) FetchKeys(
	ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp,
) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	wanted := make(map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp, len(requests))
	for req, ts := range requests {
		if !f.k.isLocal(req.ServerName) && f.k.allowed(req.ServerName) {
			wanted[req] = ts
		}
	}
	if len(wanted) == 0 {
		return nil, nil
	}
	fetched, err := f.KeyFetcher.FetchKeys(ctx, wanted)
	if err != nil {
		f.k.log.WithError(err).WithField("fetcher", f.FetcherName()).Debug("fetching server keys")
		return nil, err
	}
	// A notary may answer for servers we did not ask about; never let it
	// speak for us.
	for req := range fetched {
		if f.k.isLocal(req.ServerName) {
			delete(fetched, req)
		}
	}
	source := func(req gomatrixserverlib.PublicKeyLookupRequest) spec.ServerName {
		if f.notary != "" {
			return f.notary
		}
		return req.ServerName
	}
	if err := f.k.store.storeKeys(ctx, fetched, source); err != nil {
		return nil, err
	}
	return fetched, nil
}

// recordingClient records the responses of the key ring's direct fetches
// (see KeyRing.record) before the fetcher uses them.
type recordingClient struct {
	gomatrixserverlib.KeyClient
	k *KeyRing
}

func (c recordingClient) GetServerKeys(ctx context.Context, server spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	keys, err := c.KeyClient.GetServerKeys(ctx, server)
	if err != nil {
		return keys, err
	}
	if err := c.k.record(ctx, server, keys, false); err != nil {
		// The fetcher runs the same checks and will refuse the
		// response itself; nothing is stored.
		c.k.log.WithError(err).WithField("server", server).Debug("not recording a key response")
	}
	return keys, nil
}
