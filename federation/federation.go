// Package federation is the HTTP edge of the server-server API: the routes
// under /_matrix/federation and /_matrix/key, X-Matrix request
// verification, and the wiring of the key ring and the outbound queues.
// https://spec.matrix.org/v1.19/server-server-api/
package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/matrix-org/util"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/jsonx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// Config is what the edge needs from the server's configuration.
type Config struct {
	ServerName  spec.ServerName
	KeyID       gomatrixserverlib.KeyID
	PrivateKey  ed25519.PrivateKey
	KeyValidity time.Duration
	// Allowed reports whether we federate with a server (allow and deny
	// lists); nil allows every server.
	Allowed func(spec.ServerName) bool
	// MaxBodyBytes bounds the request bodies of endpoints that do not
	// choose their own limit; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Version is the software version GET /version reports; empty means
	// the module version the binary was built from.
	Version string
	// Cluster is set in a deployment of several processes (cluster.go);
	// nil for one.
	Cluster *Cluster
}

// DefaultMaxBodyBytes is the request body limit of federation endpoints
// that do not set their own (a transaction may carry 50 PDUs of 64 KiB
// each and 100 EDUs: its endpoint needs more).
const DefaultMaxBodyBytes = 4 << 20

func (c Config) maxBody() int64 {
	if c.MaxBodyBytes > 0 {
		return c.MaxBodyBytes
	}
	return DefaultMaxBodyBytes
}

func (c Config) allowed(s spec.ServerName) bool { return c.Allowed == nil || c.Allowed(s) }

// Keys is the key ring as the edge uses it (a *keyring.KeyRing): checking
// signatures, and answering notary queries for other servers' keys.
type Keys interface {
	gomatrixserverlib.JSONVerifier
	NotaryKeys(ctx context.Context, server spec.ServerName, keyIDs []gomatrixserverlib.KeyID, minValidUntil spec.Timestamp) ([]gomatrixserverlib.ServerKeys, error)
}

// API serves the federation routes.
type API struct {
	cfg Config
	log logrus.FieldLogger
	// verifier checks X-Matrix request signatures and event signatures
	// with other servers' keys (the key ring).
	verifier gomatrixserverlib.JSONVerifier
	// notary answers key queries about other servers (the key ring).
	notary Keys
	// client makes signed requests to other servers.
	client fclient.FederationClient
	rooms  *roomserver.Service
	users  *users.Service
	// roomParts is the state of the room routes (rooms.go, join.go).
	roomParts
	// mediaParts is the content repository the media routes serve
	// (media.go).
	mediaParts
	// e2eeParts is the key store the E2EE routes serve (e2ee.go).
	e2eeParts e2eeParts
	// calls is our SFU's token service (rtc.go); nil when calls are off.
	calls *calls.Service
	// joined is called after our user joins a room through another
	// server (SetJoinedHook); nil for nothing.
	joined func(ctx context.Context, roomID string)
}

// signedFunc handles a request whose X-Matrix signature has been verified:
// origin is the server that signed it and body its JSON content (nil for a
// request without one).
type signedFunc func(r *http.Request, origin spec.ServerName, body []byte) (any, error)

// New returns the federation edge. keys verifies signatures and answers
// notary queries; client makes our requests to other servers.
func New(cfg Config, log logrus.FieldLogger, keys Keys, client fclient.FederationClient, rs *roomserver.Service, us *users.Service) *API {
	if cfg.Version == "" {
		cfg.Version = buildVersion()
	}
	return &API{cfg: cfg, log: log, verifier: keys, notary: keys, client: client, rooms: rs, users: us}
}

func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// signed verifies a request's X-Matrix authorization before anything else
// reads it: 401 M_UNAUTHORIZED when it is missing or wrong, 403
// M_FORBIDDEN for a server the allow and deny lists refuse. The body may
// be up to Config.MaxBodyBytes and must pass checkBody; see signedTxn for
// transactions.
// https://spec.matrix.org/v1.19/server-server-api/#request-authentication
func (a *API) signed(h signedFunc) httpx.HandlerFunc {
	return a.signedBody(a.cfg.maxBody(), checkBody, h)
}

// signedTxn is signed for PUT /send: a bigger body, and only its syntax
// checked as a whole, so that one bad PDU or EDU is refused on its own
// (see send) instead of taking the rest of the transaction down with it.
func (a *API) signedTxn(h signedFunc) httpx.HandlerFunc {
	return a.signedBody(maxTxnBytes, checkTxnBody, h)
}

// signedBody is signed with a body limit (413 M_TOO_LARGE beyond it) and
// a body check of its own.
func (a *API) signedBody(limit int64, check func([]byte) error, h signedFunc) httpx.HandlerFunc {
	return func(r *http.Request) (any, error) {
		origin := claimedOrigin(r)
		if origin == "" {
			return nil, mxerr.Unauthorized("Missing or malformed \"Authorization: X-Matrix ...\" header")
		}
		// Refused before the signature is checked: checking it would
		// mean fetching the server's keys, that is, contacting a server
		// we do not talk to. The claim is unproven, but all it gains a
		// liar is this 403.
		if !a.cfg.allowed(origin) {
			return nil, mxerr.Forbidden("Federation with %s is not allowed", origin)
		}
		body, err := readJSONBody(r, limit, check)
		if err != nil {
			return nil, err
		}
		// VerifyHTTPRequest reads the body itself and insists on a JSON
		// Content-Type, which the spec does not require of senders: give
		// it the body already read and checked, labelled as JSON. Its
		// logs (and the key ring's) go to our logger.
		ctx := util.ContextWithLogger(r.Context(), a.log.WithField("origin", origin))
		vr := r.Clone(ctx)
		vr.Body = io.NopCloser(bytes.NewReader(body))
		if len(body) > 0 {
			vr.Header.Set("Content-Type", "application/json")
		}
		req, res := fclient.VerifyHTTPRequest(vr, time.Now(), a.cfg.ServerName, nil, a.verifier)
		if req == nil {
			msg := responseMessage(res.JSON)
			if res.Code >= http.StatusInternalServerError {
				return nil, fmt.Errorf("verify X-Matrix signature of %s: %s", origin, msg)
			}
			// Everything else is a missing, malformed or wrong
			// authorization, including a destination other than us,
			// which the spec answers with 401.
			return nil, mxerr.Unauthorized("%s", msg)
		}
		return h(r, req.Origin(), body)
	}
}

// doSigned sends a request signed with our key to server and decodes its
// JSON answer into out. A server the allow and deny lists refuse is not
// contacted.
func (a *API) doSigned(ctx context.Context, method string, server spec.ServerName, path string, body, out any) error {
	if !a.cfg.allowed(server) {
		return fmt.Errorf("federation with %s is not allowed", server)
	}
	req := fclient.NewFederationRequest(method, a.cfg.ServerName, server, path)
	if body != nil {
		if err := req.SetContent(body); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	if err := req.Sign(a.cfg.ServerName, a.cfg.KeyID, a.cfg.PrivateKey); err != nil {
		return fmt.Errorf("sign %s %s: %w", method, path, err)
	}
	hr, err := req.HTTPRequest()
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if err := a.client.DoRequestAndParseResponse(ctx, hr, out); err != nil {
		return fmt.Errorf("%s %s on %s: %w", method, path, server, err)
	}
	return nil
}

// claimedOrigin is the origin an X-Matrix Authorization header names, or
// "" without one.
func claimedOrigin(r *http.Request) spec.ServerName {
	for _, h := range r.Header.Values("Authorization") {
		if scheme, origin, _, _, _ := fclient.ParseAuthorization(h); scheme == "X-Matrix" && origin != "" {
			return origin
		}
	}
	return ""
}

// readJSONBody reads a request body of at most limit bytes that must be
// empty or a JSON object: 413 M_TOO_LARGE, 400 M_NOT_JSON (check refuses
// it), 400 M_BAD_JSON (not an object). An empty body is nil.
func readJSONBody(r *http.Request, limit int64, check func([]byte) error) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, mxerr.TooLarge("Request body is larger than %d bytes", limit)
	}
	r.Body = http.MaxBytesReader(nil, r.Body, limit)
	body, err := httpx.ReadRawBody(r)
	if err != nil {
		return nil, err
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, nil
	}
	if err := check(body); err != nil {
		return nil, err
	}
	if trimmed[0] != '{' {
		return nil, mxerr.BadJSON("Request body must be a JSON object")
	}
	return body, nil
}

// maxBodyDepth is how deep a federation body may nest: an event's content
// may nest jsonx.MaxDepth deep, and the event sits inside the body (as in
// an invite's {"event": ...}).
const maxBodyDepth = maxPDUDepth + 1

// maxPDUDepth is how deep an event may nest: its content one level
// inside it, and that jsonx.MaxDepth deep, as our clients may send it.
const maxPDUDepth = jsonx.MaxDepth + 1

// checkBody refuses with 400 M_NOT_JSON a body that is not JSON as Matrix
// needs it: well formed, UTF-8 (which the spec requires), no lone
// surrogate escapes, nested at most maxBodyDepth deep.
func checkBody(body []byte) error {
	if err := jsonx.Validate(body, maxBodyDepth); err != nil {
		return mxerr.NotJSON("Request body is not valid JSON: %v", err)
	}
	return nil
}

// checkTxnBody checks only that a transaction is well formed UTF-8 JSON:
// send checks each PDU and EDU in it with jsonx (lone surrogate escapes,
// nesting), and refuses only those that fail. Invalid UTF-8 refuses the
// whole body: the spec requires UTF-8 of it, gomatrixserverlib will not
// verify the signature of a body without it, and Synapse cannot decode it.
func checkTxnBody(body []byte) error {
	if !utf8.Valid(body) || !json.Valid(body) {
		return mxerr.NotJSON("Request body is not valid UTF-8 JSON")
	}
	return nil
}

// responseMessage is the message of a gomatrixserverlib error response
// ({"message": "..."}).
func responseMessage(v any) string {
	raw, _ := json.Marshal(v)
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &m) != nil || m.Message == "" {
		return "Invalid request signature"
	}
	return m.Message
}

// Register adds the federation and key routes to r.
func (a *API) Register(r *mux.Router) {
	a.registerKeys(r)
	fed := r.PathPrefix("/_matrix/federation").Subrouter()
	// A subrouter answers for its whole prefix with its own handlers;
	// NotFoundOr405 makes a known path with the wrong method 405.
	fed.NotFoundHandler = httpx.NotFoundOr405(r, a.notFound(), a.methodNotAllowed())
	fed.MethodNotAllowedHandler = a.methodNotAllowed()
	fed.Handle("/v1/version", httpx.JSON(a.log, a.version)).Methods(http.MethodGet)
	fed.Handle("/v1/openid/userinfo", httpx.JSON(a.log, a.openIDUserInfo)).Methods(http.MethodGet)
	fed.Handle("/v1/query/profile", httpx.JSON(a.log, a.signed(a.queryProfile))).Methods(http.MethodGet)
	fed.Handle("/v1/query/directory", httpx.JSON(a.log, a.signed(a.queryDirectory))).Methods(http.MethodGet)
	a.registerRooms(fed)
	a.registerReads(fed)
	a.registerE2EE(fed)
	a.registerMedia(fed)
	a.registerRTC(fed)
}

// Handler is the federation listener's whole handler: the routes of
// Register, 404 and 405 M_UNRECOGNIZED for anything else, and the request
// log.
// https://spec.matrix.org/v1.19/server-server-api/#unsupported-endpoints
func (a *API) Handler() http.Handler {
	r := mux.NewRouter().UseEncodedPath()
	a.Register(r)
	r.NotFoundHandler = httpx.NotFoundOr405(r, a.notFound(), a.methodNotAllowed())
	r.MethodNotAllowedHandler = a.methodNotAllowed()
	return httpx.Logging(a.log, httpx.UTF8Params(r))
}

func (a *API) notFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		httpx.WriteError(w, req, a.log, mxerr.Unrecognized("Unrecognized request"))
	})
}

func (a *API) methodNotAllowed() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		httpx.WriteError(w, req, a.log, mxerr.MethodNotAllowed())
	})
}
