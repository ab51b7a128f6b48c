package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// This file: the key exchange (our keys, notary queries) and the simple
// unsigned and signed queries (version, profile, directory).

// notaryParallelism bounds the servers one notary query fetches keys from
// at once.
const notaryParallelism = 8

// registerKeys adds the /_matrix/key/v2 routes.
func (a *API) registerKeys(r *mux.Router) {
	a.RegisterServerKeys(r)
	r.Handle("/_matrix/key/v2/query", httpx.JSON(a.log, a.queryKeys)).Methods(http.MethodPost)
	r.Handle("/_matrix/key/v2/query/{serverName}", httpx.JSON(a.log, a.queryServerKeys)).Methods(http.MethodGet)
	// The deprecated form with a key ID, which is ignored as it is by
	// Synapse: the answer lists every key anyway.
	r.Handle("/_matrix/key/v2/query/{serverName}/{keyID}", httpx.JSON(a.log, a.queryServerKeys)).Methods(http.MethodGet)
}

// RegisterServerKeys adds GET /_matrix/key/v2/server alone, for the client
// listener: servers that find us through /.well-known may look for our
// keys there.
func (a *API) RegisterServerKeys(r *mux.Router) {
	h := httpx.JSON(a.log, a.serverKeys)
	r.Handle("/_matrix/key/v2/server", h).Methods(http.MethodGet)
	// Deprecated: the key ID is ignored and every key is returned.
	r.Handle("/_matrix/key/v2/server/{keyID}", h).Methods(http.MethodGet)
}

// serverKeys: GET /_matrix/key/v2/server. Signed afresh on each request,
// which an ed25519 signature makes cheap, so valid_until_ts is always
// key_validity from now.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixkeyv2server
func (a *API) serverKeys(*http.Request) (any, error) {
	raw, err := a.ownKeys(time.Now())
	if err != nil {
		return nil, err
	}
	return json.RawMessage(raw), nil
}

// ownKeys is our key response, signed with our key. There is no key
// rotation yet, so old_verify_keys is empty.
func (a *API) ownKeys(now time.Time) ([]byte, error) {
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName: a.cfg.ServerName,
		VerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
			a.cfg.KeyID: {Key: spec.Base64Bytes(a.cfg.PrivateKey.Public().(ed25519.PublicKey))},
		},
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
		ValidUntilTS:  spec.AsTimestamp(now.Add(a.cfg.KeyValidity)),
	}
	raw, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("encode our server keys: %w", err)
	}
	signed, err := gomatrixserverlib.SignJSON(string(a.cfg.ServerName), a.cfg.KeyID, a.cfg.PrivateKey, raw)
	if err != nil {
		return nil, fmt.Errorf("sign our server keys: %w", err)
	}
	return signed, nil
}

// notaryQuery is one server's part of a notary query.
type notaryQuery struct {
	server        spec.ServerName
	keyIDs        []gomatrixserverlib.KeyID
	minValidUntil spec.Timestamp
}

// queryKeys: POST /_matrix/key/v2/query, the batch notary query.
// https://spec.matrix.org/v1.19/server-server-api/#post_matrixkeyv2query
func (a *API) queryKeys(r *http.Request) (any, error) {
	body, err := readJSONBody(r, a.cfg.maxBody(), checkBody)
	if err != nil {
		return nil, err
	}
	if body == nil {
		return nil, mxerr.NotJSON("Request body is empty")
	}
	type criteria struct {
		MinimumValidUntilTS *spec.Timestamp `json:"minimum_valid_until_ts"`
	}
	var req struct {
		ServerKeys map[spec.ServerName]map[gomatrixserverlib.KeyID]criteria `json:"server_keys"`
	}
	if err := httpx.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	if req.ServerKeys == nil {
		return nil, mxerr.BadJSON("server_keys is required")
	}
	now := spec.AsTimestamp(time.Now())
	queries := make([]notaryQuery, 0, len(req.ServerKeys))
	for server, ids := range req.ServerKeys {
		q := notaryQuery{server: server, minValidUntil: now}
		for id, c := range ids {
			q.keyIDs = append(q.keyIDs, id)
			// The keys must satisfy every criterion given: the
			// latest minimum wins.
			if c.MinimumValidUntilTS != nil && *c.MinimumValidUntilTS > q.minValidUntil {
				q.minValidUntil = *c.MinimumValidUntilTS
			}
		}
		queries = append(queries, q)
	}
	sort.Slice(queries, func(i, j int) bool { return queries[i].server < queries[j].server })
	return a.notaryAnswer(r.Context(), queries)
}

// queryServerKeys: GET /_matrix/key/v2/query/{serverName}, the notary
// query for one server.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixkeyv2queryservername
func (a *API) queryServerKeys(r *http.Request) (any, error) {
	server, err := url.PathUnescape(mux.Vars(r)["serverName"])
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid server name")
	}
	q := notaryQuery{server: spec.ServerName(server), minValidUntil: spec.AsTimestamp(time.Now())}
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		ts, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, mxerr.InvalidParam("minimum_valid_until_ts must be a timestamp in milliseconds")
		}
		q.minValidUntil = spec.Timestamp(ts)
	}
	return a.notaryAnswer(r.Context(), []notaryQuery{q})
}

// notaryAnswer collects each queried server's key responses, a few servers
// at a time, each additionally signed by us. Servers we cannot reach and
// have nothing stored for are left out, as the spec says.
func (a *API) notaryAnswer(ctx context.Context, queries []notaryQuery) (any, error) {
	answers := make([][]json.RawMessage, len(queries))
	errs := make([]error, len(queries))
	sem := make(chan struct{}, notaryParallelism)
	var wg sync.WaitGroup
	for i, q := range queries {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			answers[i], errs[i] = a.notaryServer(ctx, q)
		}()
	}
	wg.Wait()
	out := []json.RawMessage{}
	for i := range queries {
		if errs[i] != nil {
			return nil, errs[i]
		}
		out = append(out, answers[i]...)
	}
	return map[string]any{"server_keys": out}, nil
}

func (a *API) notaryServer(ctx context.Context, q notaryQuery) ([]json.RawMessage, error) {
	if q.server == a.cfg.ServerName {
		// Our own keys are already signed by us.
		raw, err := a.ownKeys(time.Now())
		if err != nil {
			return nil, err
		}
		return []json.RawMessage{raw}, nil
	}
	keys, err := a.notary.NotaryKeys(ctx, q.server, q.keyIDs, q.minValidUntil)
	if err != nil {
		return nil, fmt.Errorf("notary query for %s: %w", q.server, err)
	}
	out := make([]json.RawMessage, 0, len(keys))
	for _, k := range keys {
		signed, err := gomatrixserverlib.SignJSON(string(a.cfg.ServerName), a.cfg.KeyID, a.cfg.PrivateKey, k.Raw)
		if err != nil {
			return nil, fmt.Errorf("sign the key response of %s: %w", q.server, err)
		}
		out = append(out, signed)
	}
	return out, nil
}

// version: GET /_matrix/federation/v1/version.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1version
func (a *API) version(*http.Request) (any, error) {
	return map[string]any{"server": map[string]string{"name": "Tessera", "version": a.cfg.Version}}, nil
}

// queryProfile: GET /_matrix/federation/v1/query/profile. Every profile
// field is public (as with the client API's GET /profile), so all are
// given, or only field when it is named; an unset field is left out.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1queryprofile
func (a *API) queryProfile(r *http.Request, _ spec.ServerName, _ []byte) (any, error) {
	q := r.URL.Query()
	raw := q.Get("user_id")
	if raw == "" {
		return nil, mxerr.MissingParam("user_id is required")
	}
	uid, err := spec.NewUserID(raw, true)
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid user ID %q", raw)
	}
	if uid.Domain() != a.cfg.ServerName {
		return nil, mxerr.InvalidParam("User %s is not on this server", raw)
	}
	field := q.Get("field")
	if field != "" {
		if err := users.ValidateProfileKey(field); err != nil {
			return nil, err
		}
	}
	fields, err := a.users.Profile(r.Context(), uid.String())
	if err != nil {
		return nil, err
	}
	if field == "" {
		return fields, nil
	}
	out := map[string]json.RawMessage{}
	if v, ok := fields[field]; ok {
		out[field] = v
	}
	return out, nil
}

// queryDirectory: GET /_matrix/federation/v1/query/directory, a local
// alias to its room.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1querydirectory
func (a *API) queryDirectory(r *http.Request, _ spec.ServerName, _ []byte) (any, error) {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		return nil, mxerr.MissingParam("room_alias is required")
	}
	roomID, err := a.rooms.ResolveAlias(r.Context(), alias)
	if err != nil {
		return nil, err
	}
	if roomID == "" {
		return nil, mxerr.NotFound("Room alias %s not found", alias)
	}
	return map[string]any{"room_id": roomID, "servers": []spec.ServerName{a.cfg.ServerName}}, nil
}
