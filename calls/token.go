package calls

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/ratelimit"
)

// Paths under the client listener.
const (
	// ProxyPrefix is where LiveKit's signalling is reverse-proxied.
	ProxyPrefix = "/_tessera/livekit"
	// TokenPrefix is the token service (lk-jwt-service's API).
	TokenPrefix = ProxyPrefix + "/jwt"
	// TokenLifetime is how long a LiveKit JWT is valid for joining.
	TokenLifetime = time.Hour
	// LegacySlotID is the slot /sfu/get maps every call to, as
	// lk-jwt-service does.
	LegacySlotID = "m.call#ROOM"
)

// Users checks OpenID tokens our own server issued.
type Users interface {
	OpenIDUserInfo(ctx context.Context, token string) (string, error)
}

// Rooms tells a user's membership of a room.
type Rooms interface {
	Membership(ctx context.Context, roomID, userID string) (string, error)
}

// RemoteUserInfo asks another server (federation openid/userinfo) whom an
// OpenID token it issued belongs to.
type RemoteUserInfo func(ctx context.Context, serverName, token string) (string, error)

// Service issues LiveKit tokens and proxies the SFU's signalling.
type Service struct {
	ServerName    string
	PublicBaseURL string // empty: taken from each request's Host
	APIKey        string
	APISecret     string
	Users         Users
	Rooms         Rooms
	// Remote is nil when federation is off: remote users are refused.
	Remote RemoteUserInfo
	// SignalAddr is LiveKit's loopback host:port.
	SignalAddr string
	// Guard, if set, learns whom each token is for (see Guard).
	Guard *Guard
	// Delegations keeps delayed leaves handed over with token requests
	// alive (lk-jwt-service's delay_id); nil refuses such requests.
	Delegations *Delegations
	Log         logrus.FieldLogger

	proxy *httputil.ReverseProxy
	// createMu makes room creations one at a time: LiveKit v1.13.5's
	// local room store races when two CreateRoom calls for a room it does
	// not have yet run at once (the race detector finds it).
	createMu sync.Mutex
	// Limiter rate-limits token requests (nil: no limit). MSC4195 asks
	// for it: every token may create a LiveKit room.
	Limiter *ratelimit.Limiter
	// TrustForwardedFor takes the client address for Limiter from
	// X-Forwarded-For (http.trust_forwarded_for).
	TrustForwardedFor bool
}

// errUnauthorised answers every failed OpenID check alike: MSC4195 asks
// that errors reveal nothing about which users or rooms exist.
var errUnauthorised = mxerr.Unauthorized("The request could not be authorised.")

// errNotJoined is also what a room we do not know gets.
var errNotJoined = mxerr.Forbidden("You are not joined to this room")

// hashStrings is Base64(SHA256(Canonicalize([...]))) from MSC4195 (and
// lk-jwt-service): a JSON array of strings in Matrix canonical JSON (no
// HTML escaping, U+2028 and U+2029 unescaped), unpadded standard base64.
func hashStrings(ss ...string) string {
	raw, _ := json.Marshal(ss) // a []string always marshals
	canonical, err := gomatrixserverlib.CanonicalJSON(raw)
	if err != nil {
		canonical = raw // not reached: raw is valid JSON
	}
	sum := sha256.Sum256(canonical)
	return base64.RawStdEncoding.EncodeToString(sum[:])
}

// RoomName is the LiveKit room of a MatrixRTC slot in a Matrix room.
func RoomName(roomID, slotID string) string { return hashStrings(roomID, slotID) }

// IdentityFor is lk-jwt-service's /get_token participant identity.
func IdentityFor(userID, deviceID, memberID string) string {
	return hashStrings(userID, deviceID, memberID)
}

// MemberIdentity is MSC4195's participant identity for the homeserver
// endpoint: [sender, member.id].
func MemberIdentity(userID, memberID string) string { return hashStrings(userID, memberID) }

// LegacyIdentity is /sfu/get's identity: user ID and device ID.
func LegacyIdentity(userID, deviceID string) string { return userID + ":" + deviceID }

// baseURL is the server's public base, without a trailing slash.
func (s *Service) baseURL(r *http.Request) string {
	if s.PublicBaseURL != "" {
		return strings.TrimSuffix(s.PublicBaseURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// ServiceURL is the token service URL (livekit_service_url).
func (s *Service) ServiceURL(r *http.Request) string { return s.baseURL(r) + TokenPrefix }

// LiveKitURL is the SFU's WebSocket URL clients connect to.
func (s *Service) LiveKitURL(r *http.Request) string {
	b := s.baseURL(r)
	if rest, ok := strings.CutPrefix(b, "https://"); ok {
		return "wss://" + rest + ProxyPrefix
	}
	return "ws://" + strings.TrimPrefix(b, "http://") + ProxyPrefix
}

// VerifyOpenID returns the user an OpenID token belongs to: ours, checked
// locally, or another server's, asked over federation. The user must be
// of the server that vouches for them.
func (s *Service) VerifyOpenID(ctx context.Context, token, serverName string) (userID string, local bool, err error) {
	if token == "" || serverName == "" {
		return "", false, errUnauthorised
	}
	if serverName == s.ServerName {
		uid, err := s.Users.OpenIDUserInfo(ctx, token)
		if err != nil {
			return "", false, errUnauthorised
		}
		return uid, true, nil
	}
	if s.Remote == nil {
		return "", false, errUnauthorised
	}
	uid, err := s.Remote(ctx, serverName, token)
	if err != nil || !strings.HasSuffix(uid, ":"+serverName) || !strings.HasPrefix(uid, "@") {
		return "", false, errUnauthorised
	}
	return uid, false, nil
}

// Grant is what a token allows besides joining and subscribing.
type Grant struct {
	// Create makes sure the LiveKit room exists before the token is
	// issued (the token itself never carries roomCreate).
	Create bool
	// Publish lets the holder send media.
	Publish bool
}

// Token checks that userID is joined to roomID and returns a JWT for the
// LiveKit room of slotID with the given identity.
func (s *Service) Token(ctx context.Context, userID, roomID, slotID, identity string, g Grant) (string, error) {
	m, err := s.Rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return "", err
	}
	if m != "join" {
		return "", errNotJoined
	}
	room := RoomName(roomID, slotID)
	if s.Guard != nil {
		if err := s.Guard.Record(ctx, room, identity, roomID, userID); err != nil {
			return "", err
		}
	}
	if g.Create {
		if err := s.createRoom(ctx, room); err != nil {
			return "", err
		}
	}
	return s.JoinToken(room, identity, g.Publish)
}

// JoinToken is a one-hour JWT for room only, with MSC4195's grants:
// join and subscribe; publish if asked; never roomCreate (which would
// also let the holder delete any room), hidden or metadata updates.
func (s *Service) JoinToken(room, identity string, publish bool) (string, error) {
	yes, no := true, false
	at := auth.NewAccessToken(s.APIKey, s.APISecret)
	at.SetVideoGrant(&auth.VideoGrant{
		RoomJoin: true, Room: room,
		CanPublish: &publish, CanSubscribe: &yes, CanUpdateOwnMetadata: &no,
	}).
		SetIdentity(identity).
		SetValidFor(TokenLifetime)
	return at.ToJWT()
}

// LiveKitRequest is MSC4195's token request for one of our SFUs, from our
// own client API or, with the user's server as origin, over federation.
type LiveKitRequest struct {
	URL      string `json:"url"`
	RoomID   string `json:"room_id"`
	SlotID   string `json:"slot_id"`
	MemberID string `json:"member_id"`
}

// Validate answers a request missing a required field.
func (q *LiveKitRequest) Validate() error {
	if q.URL == "" || q.RoomID == "" || q.SlotID == "" || q.MemberID == "" {
		return mxerr.BadJSON("url, room_id, slot_id and member_id are required")
	}
	return nil
}

// LiveKitToken is MSC4195's get_token for our SFU: url must be our SFU
// (400 M_INVALID_PARAM) and the user must be joined to the room (403
// M_FORBIDDEN, also for a room we do not know; Token checks it). The LiveKit room is
// created for local and remote users alike; only local users may
// publish, so that everyone publishes on their own server's SFU. r is
// the client request, or nil over federation.
func (s *Service) LiveKitToken(ctx context.Context, r *http.Request, userID string, local bool, q LiveKitRequest) (string, error) {
	if err := q.Validate(); err != nil {
		return "", err
	}
	if !s.OwnURL(q.URL, r) {
		return "", mxerr.InvalidParam("url is not one of this server's SFUs")
	}
	return s.Token(ctx, userID, q.RoomID, q.SlotID, MemberIdentity(userID, q.MemberID), Grant{Create: true, Publish: local})
}

// OwnURL reports whether u is our SFU's URL. With public_baseurl set it
// must be exactly the URL we advertise. Without it, a client request is
// compared with what rtc/transports answered that request; a federation
// request (r nil) arrives on another listener and name, so only the
// scheme and path can be checked.
func (s *Service) OwnURL(u string, r *http.Request) bool {
	if s.PublicBaseURL != "" || r != nil {
		return u == s.LiveKitURL(r)
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "ws" && p.Scheme != "wss") || p.Host == "" {
		return false
	}
	return strings.TrimSuffix(p.Path, "/") == ProxyPrefix && p.RawQuery == "" && p.Fragment == ""
}

// Allow takes a token from the token endpoints' rate limit for key (a
// user, a client address or a server): 429 M_LIMIT_EXCEEDED without one.
func (s *Service) Allow(key string) error {
	if s.Limiter == nil {
		return nil
	}
	if ok, wait := s.Limiter.Allow(key); !ok {
		return mxerr.LimitExceeded(wait.Milliseconds())
	}
	return nil
}

// createRoom makes sure the LiveKit room exists (CreateRoom returns the
// existing room), as lk-jwt-service does for full-access users.
func (s *Service) createRoom(ctx context.Context, room string) error {
	s.createMu.Lock()
	defer s.createMu.Unlock()
	rs := lksdk.NewRoomServiceClient("http://"+s.SignalAddr, s.APIKey, s.APISecret)
	// lk-jwt-service's timeouts: the room waits 5 minutes for its first
	// participant and lasts 20 s after its last one leaves.
	if _, err := rs.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: room, EmptyTimeout: 300, DepartureTimeout: 20}); err != nil {
		return fmt.Errorf("create LiveKit room: %w", err)
	}
	return nil
}

// openIDToken is the body's openid_token.
type openIDToken struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int    `json:"expires_in"`
}

// delegation is lk-jwt-service's optional hand-over of the client's
// delayed leave event with a token request: all three fields or none.
// Element Call and Element X send it so that a call outlives the client
// being frozen in the background.
type delegation struct {
	DelayID      string `json:"delay_id"`
	DelayTimeout int64  `json:"delay_timeout"`
	// DelayCSAPIURL is the homeserver whose delayed event it is. For our
	// users that is us, and the event is handled in-process.
	DelayCSAPIURL string `json:"delay_cs_api_url"`
}

func (d delegation) requested() (bool, error) {
	all := d.DelayID != "" && d.DelayTimeout > 0 && d.DelayCSAPIURL != ""
	if !all && (d.DelayID != "" || d.DelayTimeout != 0 || d.DelayCSAPIURL != "") {
		return false, badJSON("The request body is missing `delay_id`, `delay_timeout` or `delay_cs_api_url`")
	}
	return all, nil
}

type legacyRequest struct {
	Room        string      `json:"room"`
	OpenIDToken openIDToken `json:"openid_token"`
	DeviceID    string      `json:"device_id"`
	delegation
}

type getTokenRequest struct {
	RoomID      string      `json:"room_id"`
	SlotID      string      `json:"slot_id"`
	OpenIDToken openIDToken `json:"openid_token"`
	Member      member      `json:"member"`
	delegation
}

type member struct {
	ID              string `json:"id"`
	ClaimedUserID   string `json:"claimed_user_id"`
	ClaimedDeviceID string `json:"claimed_device_id"`
}

// validate checks the fields /get_token and /delegate_delayed_leave share.
func (q *getTokenRequest) validate() error {
	if q.RoomID == "" || q.SlotID == "" {
		return badJSON("The request body is missing `room_id` or `slot_id`")
	}
	if q.Member.ID == "" || q.Member.ClaimedUserID == "" || q.Member.ClaimedDeviceID == "" {
		return badJSON("The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`")
	}
	if q.OpenIDToken.AccessToken == "" || q.OpenIDToken.MatrixServerName == "" {
		return badJSON("The request body `openid_token` is missing a `access_token` or `matrix_server_name`")
	}
	return nil
}

// Handler serves everything under ProxyPrefix: the token service under
// TokenPrefix and LiveKit's signalling (HTTP and WebSocket) for the rest.
func (s *Service) Handler() http.Handler {
	target := &url.URL{Scheme: "http", Host: s.SignalAddr}
	s.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, ProxyPrefix)
			pr.Out.URL.RawPath = ""
			if pr.Out.URL.Path == "" {
				pr.Out.URL.Path = "/"
			}
			pr.SetXForwarded()
		},
		ModifyResponse: func(resp *http.Response) error {
			// Our CORS middleware has set these already; two values
			// would make browsers refuse the answer.
			for k := range resp.Header {
				if strings.HasPrefix(k, "Access-Control-") {
					resp.Header.Del(k)
				}
			}
			return nil
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case TokenPrefix + "/sfu/get":
			s.serveToken(w, r, s.legacy)
		case TokenPrefix + "/get_token":
			s.serveToken(w, r, s.getToken)
		case TokenPrefix + "/delegate_delayed_leave":
			s.serveToken(w, r, s.delegateLeave)
		case TokenPrefix + "/healthz":
			w.WriteHeader(http.StatusOK)
		default:
			if strings.HasPrefix(r.URL.Path, TokenPrefix+"/") {
				writeError(w, mxerr.Unrecognized("Unrecognized request"))
				return
			}
			s.proxy.ServeHTTP(w, r)
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Service) serveToken(w http.ResponseWriter, r *http.Request, h func(*http.Request, []byte) (any, error)) {
	h2 := w.Header()
	h2.Set("Access-Control-Allow-Origin", "*")
	h2.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
	h2.Set("Access-Control-Allow-Headers", "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token, Authorization")
	switch r.Method {
	case http.MethodOptions:
		writeJSON(w, http.StatusOK, struct{}{})
		return
	case http.MethodPost:
	default:
		writeError(w, &mxerr.Error{Status: http.StatusMethodNotAllowed, Code: "M_UNRECOGNIZED", Message: "Method not allowed"})
		return
	}
	// Per client address, before the body is read: a request may make
	// us ask another server about an OpenID token.
	if err := s.Allow("addr:" + httpx.ClientIP(r, s.TrustForwardedFor)); err != nil {
		writeError(w, err.(*mxerr.Error))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		writeError(w, mxerr.NotJSON("Error reading request"))
		return
	}
	out, err := h(r, body)
	if err != nil {
		me, ok := mxerr.As(err)
		if !ok {
			if s.Log != nil {
				s.Log.WithError(err).Error("calls: token request failed")
			}
			me = mxerr.Unknown(http.StatusInternalServerError, "Internal Server Error")
		}
		writeError(w, me)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// writeError writes a Matrix error the way the client API does (with
// Retry-After on a 429).
func writeError(w http.ResponseWriter, e *mxerr.Error) { httpx.WriteError(w, nil, nil, e) }

func badJSON(msg string) error { return mxerr.BadJSON("%s", msg) }

func (s *Service) legacy(r *http.Request, body []byte) (any, error) {
	var req legacyRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, mxerr.NotJSON("Error reading request")
	}
	if req.Room == "" {
		return nil, badJSON("Missing room parameter")
	}
	if req.OpenIDToken.AccessToken == "" || req.OpenIDToken.MatrixServerName == "" {
		return nil, badJSON("Missing OpenID token parameters")
	}
	delegate, err := req.requested()
	if err != nil {
		return nil, err
	}
	uid, local, err := s.VerifyOpenID(r.Context(), req.OpenIDToken.AccessToken, req.OpenIDToken.MatrixServerName)
	if err != nil {
		return nil, err
	}
	if delegate && !local {
		return nil, errDelegationLocal
	}
	// lk-jwt-service's rules: local ("full access") users open the
	// LiveKit room; remote users may join one that is open. Both publish.
	identity := LegacyIdentity(uid, req.DeviceID)
	jwt, err := s.Token(r.Context(), uid, req.Room, LegacySlotID, identity, Grant{Create: local, Publish: true})
	if err != nil {
		return nil, err
	}
	if delegate {
		if err := s.delegate(r.Context(), uid, req.Room, LegacySlotID, req.DeviceID, identity, req.DelayID); err != nil {
			return nil, err
		}
	}
	return map[string]string{"url": s.LiveKitURL(r), "jwt": jwt}, nil
}

func (s *Service) getToken(r *http.Request, body []byte) (any, error) {
	var req getTokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, mxerr.NotJSON("Error reading request")
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	delegate, err := req.requested()
	if err != nil {
		return nil, err
	}
	uid, local, err := s.verifyMember(r, &req)
	if err != nil {
		return nil, err
	}
	if delegate && !local {
		return nil, errDelegationLocal
	}
	identity := IdentityFor(uid, req.Member.ClaimedDeviceID, req.Member.ID)
	jwt, err := s.Token(r.Context(), uid, req.RoomID, req.SlotID, identity, Grant{Create: local, Publish: true})
	if err != nil {
		return nil, err
	}
	if delegate {
		if err := s.delegate(r.Context(), uid, req.RoomID, req.SlotID, req.Member.ID, identity, req.DelayID); err != nil {
			return nil, err
		}
	}
	return map[string]string{"url": s.LiveKitURL(r), "jwt": jwt}, nil
}

// delegateLeave: lk-jwt-service's POST /delegate_delayed_leave, the
// hand-over of a delayed leave by a client already on the SFU.
func (s *Service) delegateLeave(r *http.Request, body []byte) (any, error) {
	var req getTokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, mxerr.NotJSON("Error reading request")
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	if delegate, err := req.requested(); err != nil || !delegate {
		return nil, badJSON("The request body is missing `delay_id`, `delay_timeout` or `delay_cs_api_url`")
	}
	uid, local, err := s.verifyMember(r, &req)
	if err != nil {
		return nil, err
	}
	if !local {
		return nil, errDelegationLocal
	}
	if m, err := s.Rooms.Membership(r.Context(), req.RoomID, uid); err != nil {
		return nil, err
	} else if m != "join" {
		return nil, errNotJoined
	}
	identity := IdentityFor(uid, req.Member.ClaimedDeviceID, req.Member.ID)
	if err := s.delegate(r.Context(), uid, req.RoomID, req.SlotID, req.Member.ID, identity, req.DelayID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// verifyMember checks the OpenID token and that it is the claimed user's.
func (s *Service) verifyMember(r *http.Request, req *getTokenRequest) (uid string, local bool, err error) {
	uid, local, err = s.VerifyOpenID(r.Context(), req.OpenIDToken.AccessToken, req.OpenIDToken.MatrixServerName)
	if err != nil {
		return "", false, err
	}
	if uid != req.Member.ClaimedUserID {
		return "", false, errUnauthorised
	}
	return uid, local, nil
}

// errDelegationLocal: we keep only our own users' delayed events alive
// (as lk-jwt-service does for its "full access" users); another server's
// would need its client API called with a delay ID it lent us.
var errDelegationLocal = mxerr.BadJSON("Delegation of delayed events is only supported for users of this server")

// delegate hands the user's delayed leave delayID to Delegations, to be
// kept alive while identity is in the LiveKit room of roomID and slotID.
func (s *Service) delegate(ctx context.Context, uid, roomID, slotID, memberID, identity, delayID string) error {
	if s.Delegations == nil {
		return mxerr.Unrecognized("Delegation of delayed events is not enabled on this server")
	}
	return s.Delegations.Delegate(ctx, Delegation{
		UserID: uid, RoomID: roomID, SlotID: slotID, MemberID: memberID, DelayID: delayID,
		LiveKitRoom: RoomName(roomID, slotID), Identity: identity,
	})
}
