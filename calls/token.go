package calls

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/sirupsen/logrus"
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
	Log        logrus.FieldLogger

	proxy *httputil.ReverseProxy
	// createMu makes room creations one at a time: LiveKit v1.13.5's
	// local room store races when two CreateRoom calls for a room it does
	// not have yet run at once (the race detector finds it).
	createMu sync.Mutex
}

// Error is a Matrix error answer.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"errcode"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

var errUnauthorised = &Error{http.StatusUnauthorized, "M_UNAUTHORIZED", "The request could not be authorised."}

// hashStrings is Base64(SHA256(Canonicalize([...]))) from MSC4195 (and
// lk-jwt-service): a JSON array of strings, unpadded standard base64.
func hashStrings(ss ...string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // canonical JSON does not escape <, >, &
	_ = enc.Encode(ss)
	sum := sha256.Sum256(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
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

// Token checks that userID is joined to roomID and returns a JWT for the
// LiveKit room of slotID with the given identity. Local users' requests
// create the LiveKit room; remote users may only join one that exists.
func (s *Service) Token(ctx context.Context, userID string, local bool, roomID, slotID, identity string) (string, error) {
	m, err := s.Rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return "", err
	}
	if m != "join" {
		return "", &Error{http.StatusForbidden, "M_FORBIDDEN", "You are not joined to this room"}
	}
	room := RoomName(roomID, slotID)
	if local {
		if err := s.createRoom(ctx, room); err != nil {
			return "", err
		}
	}
	return s.JoinToken(room, identity)
}

// JoinToken is a one-hour JWT to join, publish and subscribe in room only.
func (s *Service) JoinToken(room, identity string) (string, error) {
	yes := true
	at := auth.NewAccessToken(s.APIKey, s.APISecret)
	at.SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: room, CanPublish: &yes, CanSubscribe: &yes}).
		SetIdentity(identity).
		SetValidFor(TokenLifetime)
	return at.ToJWT()
}

// createRoom makes sure the LiveKit room exists (CreateRoom returns the
// existing room), as lk-jwt-service does for full-access users.
func (s *Service) createRoom(ctx context.Context, room string) error {
	s.createMu.Lock()
	defer s.createMu.Unlock()
	at := auth.NewAccessToken(s.APIKey, s.APISecret)
	at.SetVideoGrant(&auth.VideoGrant{RoomCreate: true}).SetValidFor(time.Minute)
	jwt, err := at.ToJWT()
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{"name": room, "empty_timeout": 300, "departure_timeout": 20})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		"http://"+s.SignalAddr+"/twirp/livekit.RoomService/CreateRoom", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+jwt)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("create LiveKit room: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("create LiveKit room: HTTP %d: %s", resp.StatusCode, msg)
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

type legacyRequest struct {
	Room        string      `json:"room"`
	OpenIDToken openIDToken `json:"openid_token"`
	DeviceID    string      `json:"device_id"`
}

type getTokenRequest struct {
	RoomID      string      `json:"room_id"`
	SlotID      string      `json:"slot_id"`
	OpenIDToken openIDToken `json:"openid_token"`
	Member      struct {
		ID              string `json:"id"`
		ClaimedUserID   string `json:"claimed_user_id"`
		ClaimedDeviceID string `json:"claimed_device_id"`
	} `json:"member"`
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
		case TokenPrefix + "/healthz":
			w.WriteHeader(http.StatusOK)
		default:
			if strings.HasPrefix(r.URL.Path, TokenPrefix+"/") {
				writeJSON(w, http.StatusNotFound, &Error{http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request"})
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
		writeJSON(w, http.StatusMethodNotAllowed, &Error{http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Method not allowed"})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, &Error{http.StatusBadRequest, "M_NOT_JSON", "Error reading request"})
		return
	}
	out, err := h(r, body)
	if err != nil {
		var me *Error
		if !errors.As(err, &me) {
			if s.Log != nil {
				s.Log.WithError(err).Error("calls: token request failed")
			}
			me = &Error{http.StatusInternalServerError, "M_UNKNOWN", "Internal Server Error"}
		}
		writeJSON(w, me.Status, me)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func badJSON(msg string) error { return &Error{http.StatusBadRequest, "M_BAD_JSON", msg} }

func (s *Service) legacy(r *http.Request, body []byte) (any, error) {
	var req legacyRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &Error{http.StatusBadRequest, "M_NOT_JSON", "Error reading request"}
	}
	if req.Room == "" {
		return nil, badJSON("Missing room parameter")
	}
	if req.OpenIDToken.AccessToken == "" || req.OpenIDToken.MatrixServerName == "" {
		return nil, badJSON("Missing OpenID token parameters")
	}
	uid, local, err := s.VerifyOpenID(r.Context(), req.OpenIDToken.AccessToken, req.OpenIDToken.MatrixServerName)
	if err != nil {
		return nil, err
	}
	jwt, err := s.Token(r.Context(), uid, local, req.Room, LegacySlotID, LegacyIdentity(uid, req.DeviceID))
	if err != nil {
		return nil, err
	}
	return map[string]string{"url": s.LiveKitURL(r), "jwt": jwt}, nil
}

func (s *Service) getToken(r *http.Request, body []byte) (any, error) {
	var req getTokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &Error{http.StatusBadRequest, "M_NOT_JSON", "Error reading request"}
	}
	if req.RoomID == "" || req.SlotID == "" {
		return nil, badJSON("The request body is missing `room_id` or `slot_id`")
	}
	if req.Member.ID == "" || req.Member.ClaimedUserID == "" || req.Member.ClaimedDeviceID == "" {
		return nil, badJSON("The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`")
	}
	if req.OpenIDToken.AccessToken == "" || req.OpenIDToken.MatrixServerName == "" {
		return nil, badJSON("The request body `openid_token` is missing a `access_token` or `matrix_server_name`")
	}
	uid, local, err := s.VerifyOpenID(r.Context(), req.OpenIDToken.AccessToken, req.OpenIDToken.MatrixServerName)
	if err != nil {
		return nil, err
	}
	if uid != req.Member.ClaimedUserID {
		return nil, errUnauthorised
	}
	jwt, err := s.Token(r.Context(), uid, local, req.RoomID, req.SlotID,
		IdentityFor(uid, req.Member.ClaimedDeviceID, req.Member.ID))
	if err != nil {
		return nil, err
	}
	return map[string]string{"url": s.LiveKitURL(r), "jwt": jwt}, nil
}
