// Package clientapi is the HTTP edge for /_matrix/client: it routes, checks
// access tokens, runs user-interactive auth and rate limits, and turns
// requests into calls on the domain packages. No SQL and no business rule
// lives here that another edge would have to repeat.
package clientapi

import (
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/admin"
	"github.com/tessera-hs/tessera/appservice"
	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/delayed"
	"github.com/tessera-hs/tessera/housekeeping"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/ratelimit"
	"github.com/tessera-hs/tessera/keybackup"
	"github.com/tessera-hs/tessera/keys"
	"github.com/tessera-hs/tessera/media"
	"github.com/tessera-hs/tessera/notices"
	"github.com/tessera-hs/tessera/oauth"
	"github.com/tessera-hs/tessera/push"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/slidingsync"
	"github.com/tessera-hs/tessera/syncapi"
	"github.com/tessera-hs/tessera/users"
	"github.com/tessera-hs/tessera/webhooks"
)

// API is the Client-Server API edge.
type API struct {
	cfg   *config.Config
	log   logrus.FieldLogger
	users *users.Service
	rooms *roomserver.Service
	syncs *syncapi.Service
	push  *push.Service // nil until SetPush
	// keys and keyBackup are the E2EE stores (SetKeys, SetKeyBackup).
	keys      *keys.Service
	keyBackup *keybackup.Service
	uia       *uiaSessions
	// media is the content repository (SetMedia; media.go).
	media *media.Service
	// remote joins rooms on other servers (SetRemoteJoiner); nil
	// without federation.
	remote RemoteJoiner
	// queries asks other servers for profiles and aliases
	// (SetRemoteQueries); nil without federation.
	queries RemoteQueries
	// remoteTS asks other servers for timestamp_to_event
	// (SetRemoteTimestamps); nil without federation.
	remoteTS RemoteTimestamps
	// edus tells other servers of typing and receipts (SetEDUSender).
	edus EDUSender
	// delayed holds MSC4140 delayed events (SetDelayed; delayed.go); nil
	// until set.
	delayed *delayed.Service
	// sliding serves simplified sliding sync (SetSlidingSync); nil: 404.
	sliding *slidingsync.Service
	// calls is the MatrixRTC token service (SetCalls; rtc.go); nil when
	// calls are off.
	calls *calls.Service
	// delegations runs MSC4195's delegated delayed leaves
	// (SetDelegations; rtc_delegate.go); nil when calls are off.
	delegations *calls.Delegations
	// rtcRemote gets tokens for other servers' SFUs (rtc.go); nil
	// without federation.
	rtcRemote RemoteLiveKitToken
	// housekeeping purges history and media (SetHousekeeping;
	// admin_housekeeping.go); nil until set.
	housekeeping *housekeeping.Service
	// admin is the server admin API's domain (SetAdmin; admin.go); nil
	// until set.
	admin *admin.Service
	// notices sends server notices (SetNotices; notices.go); nil until set.
	notices *notices.Service
	// webhooks are the built-in incoming webhooks (SetWebhooks;
	// webhooks.go); nil when off.
	webhooks *webhooks.Service
	// oauth is the OAuth 2.0 API's authorisation server (SetOAuth;
	// oauth.go, oauth_pages.go); nil when off.
	oauth *oauth.Service
	// asClient makes the requests to application services (pings,
	// third-party lookups; appservice.go, thirdparty.go).
	asClient *appservice.Client

	// nonces for shared-secret registration
	nonces *nonceStore
	// stream keeps the open sync streams (WebSockets); see websocket.go.
	stream *streamHub

	// Rate limiters; nil when limits are off (a nil limiter allows all).
	loginPerAddress, loginPerAccount, loginFailures, registerPerAddress *ratelimit.Limiter
	oauthTokenPerAddress                                                *ratelimit.Limiter
	mediaUploads, sentEvents                                            *ratelimit.Limiter
	callTokens, delayedActions                                          *ratelimit.Limiter
}

// New builds the edge.
func New(cfg *config.Config, log logrus.FieldLogger, us *users.Service, rs *roomserver.Service, ss *syncapi.Service) *API {
	a := &API{
		cfg:    cfg,
		log:    log,
		users:  us,
		rooms:  rs,
		syncs:  ss,
		uia:    newUIASessions(30 * time.Minute),
		nonces: newNonceStore(time.Minute),

		asClient: appservice.NewClient(),
	}
	if rl := cfg.RateLimits; rl.Enabled {
		a.loginPerAddress = ratelimit.New(rl.LoginPerAddress.PerSecond, rl.LoginPerAddress.Burst)
		a.loginPerAccount = ratelimit.New(rl.LoginPerAccount.PerSecond, rl.LoginPerAccount.Burst)
		a.loginFailures = ratelimit.New(rl.LoginFailures.PerSecond, rl.LoginFailures.Burst)
		a.registerPerAddress = ratelimit.New(rl.RegisterPerAddress.PerSecond, rl.RegisterPerAddress.Burst)
		a.mediaUploads = ratelimit.New(rl.MediaUploadsPerUser.PerSecond, rl.MediaUploadsPerUser.Burst)
		a.sentEvents = ratelimit.New(rl.MessagesPerUser.PerSecond, rl.MessagesPerUser.Burst)
		a.callTokens = ratelimit.New(rl.CallTokens.PerSecond, rl.CallTokens.Burst)
		a.delayedActions = ratelimit.New(rl.DelayedEventActions.PerSecond, rl.DelayedEventActions.Burst)
		a.oauthTokenPerAddress = ratelimit.New(rl.OAuthTokenPerAddress.PerSecond, rl.OAuthTokenPerAddress.Burst)
	}
	return a
}

// route is one endpoint: its method, its path below the client prefix, and
// whether it needs an access token and accepts guests.
type route struct {
	method, path string
	h            httpx.HandlerFunc
}

// Register adds every client endpoint to r.
func (a *API) Register(r *mux.Router) {
	add := func(prefix string, routes []route) {
		for _, rt := range routes {
			r.Handle(prefix+rt.path, httpx.JSON(a.log, rt.h)).Methods(rt.method)
		}
	}
	r.Handle("/_matrix/client/versions", httpx.JSON(a.log, a.versions)).Methods(http.MethodGet)
	r.Handle("/.well-known/matrix/client", httpx.JSON(a.log, a.wellKnown)).Methods(http.MethodGet)
	// Every v3 endpoint is also served at r0 for older clients, as Synapse does.
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		add(prefix, a.v3Routes())
		add(prefix, a.roomRoutes())
		add(prefix, a.roomExtraRoutes())
		add(prefix, a.accountDataRoutes())
		add(prefix, a.syncRoutes())
		add(prefix, a.toDeviceRoutes())
		add(prefix, a.pushRoutes())
		add(prefix, a.typingPresenceRoutes())
		add(prefix, a.keysRoutes())
		add(prefix, a.keyBackupRoutes())
		add(prefix, a.openIDRoutes())
		add(prefix, a.voipRoutes())
		add(prefix, a.thirdPartyRoutes())
		add(prefix, a.searchRoutes())
	}
	add("/_matrix/client/v1", []route{
		{http.MethodGet, "/register/m.login.registration_token/validity", a.registrationTokenValidity},
	})
	a.roomExtraPrefixedRoutes(add)
	a.relationsRoutes(add)
	a.hierarchyRoutes(add)
	a.dehydratedRoutes(add)
	a.delayedRoutes(add)
	a.slidingSyncRoutes(add)
	a.rtcRoutes(add)
	a.rtcDelegateRoutes(add)
	a.noticesRoutes(add)
	a.housekeepingRoutes(add)
	a.webhooksRoutes(add)
	a.appServiceRoutes(add)
	a.adminRoutes(add)
	a.registerMedia(r)
	a.registerStream(r)
	a.oauthRoutes(r)
	a.emailLinkRoutes(r)
	add("/_synapse/admin/v1", []route{
		{http.MethodGet, "/register", a.sharedSecretNonce},
		{http.MethodPost, "/register", a.sharedSecretRegister},
	})
}

func (a *API) v3Routes() []route {
	const get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	return []route{
		{get, "/capabilities", a.authed(a.capabilities, guestOK)},

		{get, "/login", a.loginFlows},
		{post, "/login", a.login},
		{post, "/refresh", a.refresh},
		{post, "/logout", a.authedEvenLocked(a.logout, guestOK)},
		{post, "/logout/all", a.authedEvenLocked(a.logoutAll, guestOK)},

		{post, "/register", a.register},
		{get, "/register/available", a.registerAvailable},
		{post, "/register/email/requestToken", threePIDDenied},
		{post, "/register/msisdn/requestToken", threePIDDenied},

		{get, "/account/whoami", a.authed(a.whoami, guestOK)},
		{post, "/account/password", a.authed(a.changePassword, noGuests)},
		{post, "/account/password/email/requestToken", threePIDDenied},
		{post, "/account/password/msisdn/requestToken", threePIDDenied},
		{post, "/account/deactivate", a.authed(a.deactivate, noGuests)},
		{get, "/account/3pid", a.authed(a.threePIDs, noGuests)},
		{post, "/account/3pid", a.authed(threePIDDeniedAuthed, noGuests)},
		{post, "/account/3pid/add", a.authed(threePIDDeniedAuthed, noGuests)},
		{post, "/account/3pid/bind", a.authed(threePIDDeniedAuthed, noGuests)},
		{post, "/account/3pid/delete", a.authed(threePIDNotFound, noGuests)},
		{post, "/account/3pid/unbind", a.authed(threePIDNotFound, noGuests)},
		{post, "/account/3pid/email/requestToken", a.authed(threePIDDeniedAuthed, noGuests)},
		{post, "/account/3pid/msisdn/requestToken", a.authed(threePIDDeniedAuthed, noGuests)},

		{get, "/devices", a.authed(a.listDevices, guestOK)},
		{get, "/devices/{deviceId}", a.authed(a.getDevice, guestOK)},
		{put, "/devices/{deviceId}", a.authed(a.updateDevice, guestOK)},
		{del, "/devices/{deviceId}", a.authed(a.deleteDevice, noGuests)},
		{post, "/delete_devices", a.authed(a.deleteDevices, noGuests)},

		{get, "/profile/{userId}", a.getProfile},
		{get, "/profile/{userId}/{keyName}", a.getProfileField},
		{put, "/profile/{userId}/{keyName}", a.authed(a.setProfileField, guestOK)},
		{del, "/profile/{userId}/{keyName}", a.authed(a.deleteProfileField, guestOK)},

		{post, "/user/{userId}/filter", a.authed(a.createFilter, guestOK)},
		{get, "/user/{userId}/filter/{filterId}", a.authed(a.getFilter, guestOK)},
	}
}

// pathVar returns a path variable, percent-decoded. The router matches on
// the encoded path so that IDs containing '/' (encoded as %2F) stay whole.
func pathVar(r *http.Request, name string) string {
	v := mux.Vars(r)[name]
	if dec, err := url.PathUnescape(v); err == nil {
		return dec
	}
	return v
}

// clientIP is the client's address, for rate limits and device info.
func (a *API) clientIP(r *http.Request) string {
	return httpx.ClientIP(r, a.cfg.HTTP.TrustForwardedFor)
}

func (a *API) clientInfo(r *http.Request) users.ClientInfo {
	return users.ClientInfo{IP: a.clientIP(r), UserAgent: r.UserAgent()}
}

// limit takes a token from l for key, or returns 429 M_LIMIT_EXCEEDED.
func limit(l *ratelimit.Limiter, key string) error {
	if ok, wait := l.Allow(key); !ok {
		return mxerr.LimitExceeded(wait.Milliseconds())
	}
	return nil
}

// checkLimit returns 429 M_LIMIT_EXCEEDED if l has no token left for key,
// without taking one: for limits that count outcomes (accounts created,
// failed attempts) rather than requests.
func checkLimit(l *ratelimit.Limiter, key string) error {
	if ok, wait := l.Check(key); !ok {
		return mxerr.LimitExceeded(wait.Milliseconds())
	}
	return nil
}

// NotFound answers requests no route matches.
func NotFound(log logrus.FieldLogger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteError(w, r, log, mxerr.Unrecognized("Unrecognized request"))
	})
}

// MethodNotAllowed answers a known path called with the wrong method.
func MethodNotAllowed(log logrus.FieldLogger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteError(w, r, log, mxerr.MethodNotAllowed())
	})
}
