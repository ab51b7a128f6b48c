package clientapi

import (
	"net/http"
	"strings"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// authedFunc is a handler that needs an authenticated user.
type authedFunc func(r *http.Request, who *users.Requester) (any, error)

type guestPolicy bool

const (
	guestOK  guestPolicy = true
	noGuests guestPolicy = false
)

// authed wraps h with access-token authentication. Guests are refused with
// M_GUEST_ACCESS_FORBIDDEN unless the endpoint is one the spec opens to them.
// https://spec.matrix.org/v1.19/client-server-api/#client-behaviour-14
func (a *API) authed(h authedFunc, guests guestPolicy) httpx.HandlerFunc {
	return a.authedMaybeLocked(h, guests, false)
}

// authedEvenLocked is authed for the endpoints a locked account may still
// use: logging out.
// https://spec.matrix.org/v1.19/client-server-api/#account-locking
func (a *API) authedEvenLocked(h authedFunc, guests guestPolicy) httpx.HandlerFunc {
	return a.authedMaybeLocked(h, guests, true)
}

func (a *API) authedMaybeLocked(h authedFunc, guests guestPolicy, allowLocked bool) httpx.HandlerFunc {
	return func(r *http.Request) (any, error) {
		token, err := accessToken(r)
		if err != nil {
			return nil, err
		}
		who, err := a.users.AuthenticateAs(r.Context(), token, a.clientInfo(r), assertion(r))
		if err != nil {
			return nil, err
		}
		if who.Locked && !allowLocked {
			return nil, mxerr.UserLocked()
		}
		if who.IsGuest && guests == noGuests {
			return nil, mxerr.GuestAccessForbidden()
		}
		return h(r, who)
	}
}

// accessToken reads the token from the Authorization header or, deprecated
// but still used by some clients, the access_token query parameter.
// https://spec.matrix.org/v1.19/client-server-api/#using-access-tokens
func accessToken(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			return "", mxerr.MissingToken()
		}
		return strings.TrimSpace(token), nil
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, nil
	}
	return "", mxerr.MissingToken()
}

// authenticate checks an access token; an application service's as_token
// acts as the user (?user_id=) and device (?device_id=, or MSC3202's
// org.matrix.msc3202.device_id) the request asserts. A locked account
// gets 401 M_USER_LOCKED.
// https://spec.matrix.org/v1.19/application-service-api/#identity-assertion
func (a *API) authenticate(r *http.Request, token string) (*users.Requester, error) {
	who, err := a.users.AuthenticateAs(r.Context(), token, a.clientInfo(r), assertion(r))
	if err == nil && who.Locked {
		return nil, mxerr.UserLocked()
	}
	return who, err
}

// assertion is the identity a request asserts, used only when its token is
// an application service's.
func assertion(r *http.Request) users.Assertion {
	q := r.URL.Query()
	as := users.Assertion{UserID: q.Get("user_id"), DeviceID: q.Get("device_id")}
	if as.DeviceID == "" {
		as.DeviceID = q.Get("org.matrix.msc3202.device_id")
	}
	return as
}
