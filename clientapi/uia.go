package clientapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// User-interactive authentication.
// https://spec.matrix.org/v1.19/client-server-api/#user-interactive-authentication-api

const (
	stageDummy    = "m.login.dummy"
	stagePassword = "m.login.password"
	stageRegToken = "m.login.registration_token"
	// stageOAuth is approval on the OAuth 2.0 API's account page (see
	// oauth_uia.go).
	stageOAuth = "m.oauth"
)

// authDict is the "auth" object of a UIA request.
type authDict struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Identifier *userIdentifier `json:"identifier"`
	User       string          `json:"user"` // deprecated form of identifier
	Password   string          `json:"password"`
	Token      string          `json:"token"`
}

// userIdentifier is the spec's identifier object.
// https://spec.matrix.org/v1.19/client-server-api/#identifier-types
type userIdentifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

// uiaSession is one UIA session. It is bound to the operation and user it
// began for, so it cannot be replayed against another request.
type uiaSession struct {
	id        string
	operation string
	userID    string // "" for registration
	created   time.Time

	mu        sync.Mutex // guards completed and regToken
	completed []string
	regToken  string // the token that passed m.login.registration_token
	done      bool   // a flow was completed and the operation ran
}

func (s *uiaSession) isDone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// uiaSessions keeps sessions in memory: they live for minutes, and a client
// whose session is lost on restart simply starts another.
type uiaSessions struct {
	mu       sync.Mutex
	sessions map[string]*uiaSession
	ttl      time.Duration
}

func newUIASessions(ttl time.Duration) *uiaSessions {
	return &uiaSessions{sessions: map[string]*uiaSession{}, ttl: ttl}
}

// maxUIASessions bounds memory if a client opens sessions without end.
const maxUIASessions = 100_000

func (u *uiaSessions) create(operation, userID string) *uiaSession {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := time.Now()
	if len(u.sessions) >= maxUIASessions {
		for id, s := range u.sessions {
			if now.Sub(s.created) > u.ttl {
				delete(u.sessions, id)
			}
		}
	}
	s := &uiaSession{id: randomID(24), operation: operation, userID: userID, created: now}
	u.sessions[s.id] = s
	return s
}

func (u *uiaSessions) get(id string) *uiaSession {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.sessions[id]
	if s != nil && time.Since(s.created) > u.ttl {
		delete(u.sessions, id)
		return nil
	}
	return s
}

func (u *uiaSessions) update(s *uiaSession, stage, regToken string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.completed, stage) {
		s.completed = append(s.completed, stage)
	}
	if regToken != "" {
		s.regToken = regToken
	}
	return slices.Clone(s.completed)
}

func (s *uiaSession) snapshot() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.completed)
}

// uiaRequest describes what a UIA-protected endpoint needs.
type uiaRequest struct {
	operation string     // e.g. "POST /account/password"
	userID    string     // the user who must authenticate ("" for registration)
	flows     [][]string // acceptable stage sequences
	// params are the challenge's per-stage parameters (m.oauth's URL).
	params map[string]any
}

// uiaResult is a completed UIA.
type uiaResult struct {
	regToken string
}

// checkUIA runs one step of UIA. It returns a result when a flow is
// complete, or an error to send: the 401 with flows and session when more
// stages are needed, with errcode and error when a stage failed.
func (a *API) checkUIA(r *http.Request, auth *authDict, req uiaRequest) (*uiaResult, error) {
	var sess *uiaSession
	if auth != nil && auth.Session != "" {
		sess = a.uia.get(auth.Session)
		if sess == nil {
			return nil, mxerr.Unknown(http.StatusBadRequest, "Unknown or expired UIA session")
		}
		if sess.operation != req.operation || sess.userID != req.userID {
			return nil, mxerr.Forbidden("The UIA session was started for a different request")
		}
		if sess.isDone() {
			// The operation already ran with this session. Completed
			// stages cannot be retried; the spec lets the server answer a
			// retry with the 401 that lists them, which cannot repeat the
			// operation (a second account, say).
			return nil, uiaChallenge(sess, req, nil)
		}
	} else {
		sess = a.uia.create(req.operation, req.userID)
	}
	if auth == nil || auth.Type == "" {
		return nil, uiaChallenge(sess, req, nil)
	}
	if !flowsAllow(req.flows, auth.Type) {
		return nil, uiaChallenge(sess, req, mxerr.Unauthorized("Authentication type %q is not offered here", auth.Type))
	}
	var regToken string
	switch auth.Type {
	case stageDummy:
	case stagePassword:
		if err := a.uiaPassword(r, auth, req.userID); err != nil {
			if me, ok := mxerr.As(err); ok && me.Status != http.StatusTooManyRequests {
				return nil, uiaChallenge(sess, req, me)
			}
			return nil, err
		}
	case stageRegToken:
		ok, err := a.users.ValidRegistrationToken(r.Context(), auth.Token)
		if err != nil {
			return nil, err
		}
		if !ok {
			// A wrong token counts against the registration limit, so
			// /register cannot be used to guess tokens faster than the
			// validity endpoint allows.
			a.registerPerAddress.Allow(a.clientIP(r))
			return nil, uiaChallenge(sess, req, mxerr.Unauthorized("Invalid registration token"))
		}
		regToken = auth.Token
	case stageOAuth:
		approved, err := a.uiaOAuth(r, req.userID)
		if err != nil {
			return nil, err
		}
		if !approved { // not yet: the challenge again, as for a fresh start
			return nil, uiaChallenge(sess, req, nil)
		}
	}
	completed := a.uia.update(sess, auth.Type, regToken)
	for _, flow := range req.flows {
		if containsAll(completed, flow) {
			sess.mu.Lock()
			defer sess.mu.Unlock()
			sess.done = true // kept until it expires, to answer retries
			return &uiaResult{regToken: sess.regToken}, nil
		}
	}
	return nil, uiaChallenge(sess, req, nil)
}

// uiaPassword checks an m.login.password stage: the identifier must name
// the user the operation is for, and failures count towards the per-account
// back-off.
func (a *API) uiaPassword(r *http.Request, auth *authDict, userID string) error {
	ident := auth.User
	if auth.Identifier != nil {
		if auth.Identifier.Type != "m.id.user" {
			return mxerr.Unauthorized("Only m.id.user identifiers are supported")
		}
		ident = auth.Identifier.User
	}
	if ident != "" {
		resolved, err := a.users.ResolveUser(ident)
		if err != nil || resolved != userID {
			return mxerr.Forbidden("Invalid username or password")
		}
	}
	if ok, wait := a.loginFailures.Check(userID); !ok {
		return mxerr.LimitExceeded(wait.Milliseconds())
	}
	err := a.users.CheckPassword(r.Context(), userID, auth.Password)
	if me, ok := mxerr.As(err); ok && me.Code == "M_FORBIDDEN" {
		a.loginFailures.Allow(userID)
	}
	return err
}

// uiaChallenge is the 401 body that tells the client what to do next.
func uiaChallenge(s *uiaSession, req uiaRequest, stageErr *mxerr.Error) *mxerr.Error {
	type flow struct {
		Stages []string `json:"stages"`
	}
	fl := make([]flow, len(req.flows))
	for i, f := range req.flows {
		fl[i] = flow{Stages: f}
	}
	params := req.params
	if params == nil {
		params = map[string]any{}
	}
	body := map[string]any{
		"flows":   fl,
		"params":  params,
		"session": s.id,
	}
	if completed := s.snapshot(); len(completed) > 0 {
		body["completed"] = completed
	}
	e := &mxerr.Error{Status: http.StatusUnauthorized, Extra: body}
	if stageErr != nil {
		e.Code, e.Message = stageErr.Code, stageErr.Message
	}
	return e
}

func flowsAllow(flows [][]string, stage string) bool {
	for _, f := range flows {
		if slices.Contains(f, stage) {
			return true
		}
	}
	return false
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// uiaBody is the part of a UIA-protected request body this file reads.
type uiaBody struct {
	Auth *authDict `json:"auth"`
}

// passwordUIA runs the m.login.password UIA that protects account changes.
func (a *API) passwordUIA(r *http.Request, who *users.Requester, operation string, raw json.RawMessage) error {
	var body uiaBody
	if err := httpx.Unmarshal(raw, &body); err != nil {
		return err
	}
	_, err := a.checkUIA(r, body.Auth, uiaRequest{
		operation: operation,
		userID:    who.UserID,
		flows:     [][]string{{stagePassword}},
	})
	return err
}
