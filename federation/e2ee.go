package federation

// End-to-end encryption over federation: other servers query our users'
// devices and keys and claim their one-time keys; we ask theirs the same
// (KeyClient); device list, cross-signing and to-device EDUs arrive here.
// https://spec.matrix.org/v1.19/server-server-api/#end-to-end-encryption
// https://spec.matrix.org/v1.19/server-server-api/#device-management
// https://spec.matrix.org/v1.19/server-server-api/#send-to-device-messaging

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/keys"
)

// KeyStore is the key store as the E2EE routes use it; *keys.Service
// satisfies it.
type KeyStore interface {
	LocalUserDevices(ctx context.Context, userID string) (*keys.UserDevices, error)
	QueryForServer(ctx context.Context, devices map[string][]string) (*keys.ServerQueryResponse, error)
	ClaimForServer(ctx context.Context, req map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// e2eeParts is the state of the E2EE routes.
type e2eeParts struct {
	keys KeyStore
}

// SetKeys gives the edge the key store. Call it before serving; until
// then the E2EE routes answer 404 M_UNRECOGNIZED, as a server without
// them would.
func (a *API) SetKeys(k KeyStore) { a.e2eeParts.keys = k }

func (a *API) keyStore() (KeyStore, error) {
	if a.e2eeParts.keys == nil {
		return nil, mxerr.Unrecognized("Unrecognized request")
	}
	return a.e2eeParts.keys, nil
}

// registerE2EE adds the routes for user/devices, user/keys/query, user/keys/claim.
func (a *API) registerE2EE(fed *mux.Router) {
	h := func(fn signedFunc) http.Handler { return httpx.JSON(a.log, a.signed(fn)) }
	fed.Handle("/v1/user/devices/{userId}", h(a.userDevices)).Methods(http.MethodGet)
	fed.Handle("/v1/user/keys/query", h(a.userKeysQuery)).Methods(http.MethodPost)
	fed.Handle("/v1/user/keys/claim", h(a.userKeysClaim)).Methods(http.MethodPost)
}

// userDevices: GET /user/devices/{userId}, for one of our users (400
// M_INVALID_PARAM for anyone else's).
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1userdevicesuserid
func (a *API) userDevices(r *http.Request, _ spec.ServerName, _ []byte) (any, error) {
	ks, err := a.keyStore()
	if err != nil {
		return nil, err
	}
	return ks.LocalUserDevices(r.Context(), pathVar(r, "userId"))
}

// userKeysQuery: POST /user/keys/query, about our users only.
// https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1userkeysquery
func (a *API) userKeysQuery(r *http.Request, _ spec.ServerName, body []byte) (any, error) {
	ks, err := a.keyStore()
	if err != nil {
		return nil, err
	}
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httpx.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	if err := keys.CheckQuery(req.DeviceKeys); err != nil {
		return nil, err
	}
	return ks.QueryForServer(r.Context(), req.DeviceKeys)
}

// userKeysClaim: POST /user/keys/claim, of our users' keys only.
// https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1userkeysclaim
func (a *API) userKeysClaim(r *http.Request, _ spec.ServerName, body []byte) (any, error) {
	ks, err := a.keyStore()
	if err != nil {
		return nil, err
	}
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httpx.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	if err := keys.CheckClaim(req.OneTimeKeys); err != nil {
		return nil, err
	}
	otks, err := ks.ClaimForServer(r.Context(), req.OneTimeKeys)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_keys": otks}, nil
}

// KeyClient is how the key store asks other servers for their users'
// keys.
func (a *API) KeyClient() keys.Client { return keyClient{a} }

// keyClient makes the key store's requests. It signs and sends them
// itself rather than through fclient's QueryKeys and friends, whose typed
// answers drop the fields they do not know of device keys (MSC3814's
// "dehydrated", say), which breaks the signatures clients check.
type keyClient struct{ a *API }

func (c keyClient) UserDevices(ctx context.Context, server spec.ServerName, userID string) (*keys.UserDevices, error) {
	var res keys.UserDevices
	if err := c.do(ctx, http.MethodGet, server, "/_matrix/federation/v1/user/devices/"+url.PathEscape(userID), nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

func (c keyClient) QueryKeys(ctx context.Context, server spec.ServerName, deviceKeys map[string][]string) (*keys.ServerQueryResponse, error) {
	body := map[string]map[string][]string{"device_keys": {}}
	for u, devs := range deviceKeys {
		if devs == nil {
			devs = []string{} // the spec's "all devices" is [], not null
		}
		body["device_keys"][u] = devs
	}
	var res keys.ServerQueryResponse
	if err := c.do(ctx, http.MethodPost, server, "/_matrix/federation/v1/user/keys/query", body, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

func (c keyClient) ClaimKeys(ctx context.Context, server spec.ServerName, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	var res struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	if err := c.do(ctx, http.MethodPost, server, "/_matrix/federation/v1/user/keys/claim",
		map[string]any{"one_time_keys": oneTimeKeys}, &res); err != nil {
		return nil, err
	}
	return res.OneTimeKeys, nil
}

// do sends a request signed with our key and decodes the JSON answer.
func (c keyClient) do(ctx context.Context, method string, server spec.ServerName, path string, body, out any) error {
	return c.a.doSigned(ctx, method, server, path, body, out)
}

// receiveE2EEEDU handles the EDUs of end-to-end encryption. fromOrigin
// checks that a user belongs to the EDU's origin: a server speaks only
// for its own users.
func (a *API) receiveE2EEEDU(ctx context.Context, h EDUHandlers, origin spec.ServerName, typ string, content json.RawMessage, fromOrigin func(string) bool) {
	var err error
	switch typ {
	case spec.MDeviceListUpdate:
		// https://spec.matrix.org/v1.19/server-server-api/#m-device_list_update-schema
		var u gomatrixserverlib.DeviceListUpdateEvent
		if json.Unmarshal(content, &u) != nil || !fromOrigin(u.UserID) || h.DeviceListUpdate == nil {
			return
		}
		err = h.DeviceListUpdate(ctx, u)
	case mSigningKeyUpdate:
		// https://spec.matrix.org/v1.19/server-server-api/#m-signing_key_update-schema
		var u keys.SigningKeyUpdate
		if json.Unmarshal(content, &u) != nil || !fromOrigin(u.UserID) || h.SigningKeyUpdate == nil {
			return
		}
		err = h.SigningKeyUpdate(ctx, u)
	case spec.MDirectToDevice:
		// https://spec.matrix.org/v1.19/server-server-api/#m-direct_to_device-schema
		var m gomatrixserverlib.ToDeviceMessage
		if json.Unmarshal(content, &m) != nil || !fromOrigin(m.Sender) || h.DirectToDevice == nil {
			return
		}
		err = h.DirectToDevice(ctx, origin, m)
	}
	if err != nil {
		a.log.WithError(err).WithField("origin", origin).WithField("edu_type", typ).Warn("ignored an EDU")
	}
}

// mSigningKeyUpdate is the EDU type of a user's new cross-signing keys
// (gomatrixserverlib's spec package has no constant for it).
const mSigningKeyUpdate = "m.signing_key_update"
