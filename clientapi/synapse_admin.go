package clientapi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// Synapse-compatible shared-secret registration, as used by operators'
// tools (register_new_matrix_user) and test suites.
// https://element-hq.github.io/synapse/latest/admin_api/register_api.html

// nonceStore hands out single-use nonces that expire.
type nonceStore struct {
	mu     sync.Mutex
	ttl    time.Duration
	nonces map[string]time.Time
}

func newNonceStore(ttl time.Duration) *nonceStore {
	return &nonceStore{ttl: ttl, nonces: map[string]time.Time{}}
}

func (n *nonceStore) issue() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	for k, t := range n.nonces {
		if now.Sub(t) > n.ttl {
			delete(n.nonces, k)
		}
	}
	nonce := randomID(32)
	n.nonces[nonce] = now
	return nonce
}

// take consumes a nonce, reporting whether it was valid.
func (n *nonceStore) take(nonce string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.nonces[nonce]
	delete(n.nonces, nonce)
	return ok && time.Since(t) <= n.ttl
}

// randomID returns n random URL-safe characters.
func randomID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func (a *API) sharedSecretEnabled() error {
	if a.cfg.Registration.SharedSecret == "" {
		return mxerr.Unknown(http.StatusBadRequest, "Shared secret registration is not enabled")
	}
	return nil
}

// sharedSecretNonce: GET /_synapse/admin/v1/register.
func (a *API) sharedSecretNonce(r *http.Request) (any, error) {
	if err := a.sharedSecretEnabled(); err != nil {
		return nil, err
	}
	return map[string]string{"nonce": a.nonces.issue()}, nil
}

// sharedSecretRegister: POST /_synapse/admin/v1/register.
func (a *API) sharedSecretRegister(r *http.Request) (any, error) {
	if err := a.sharedSecretEnabled(); err != nil {
		return nil, err
	}
	var req struct {
		Nonce       string  `json:"nonce"`
		Username    string  `json:"username"`
		Password    string  `json:"password"`
		Admin       bool    `json:"admin"`
		UserType    *string `json:"user_type"`
		DisplayName *string `json:"displayname"`
		MAC         string  `json:"mac"`
	}
	if err := httpx.DecodeJSON(r, &req, false); err != nil {
		return nil, err
	}
	if req.Nonce == "" || req.Username == "" || req.Password == "" || req.MAC == "" {
		return nil, mxerr.MissingParam("nonce, username, password and mac are required")
	}
	if !a.nonces.take(req.Nonce) {
		return nil, mxerr.Unknown(http.StatusBadRequest, "Unrecognised nonce")
	}
	// HMAC-SHA1 over nonce, username, password and admin flag (and
	// user_type, if given), NUL-separated: Synapse's definition.
	mac := hmac.New(sha1.New, []byte(a.cfg.Registration.SharedSecret))
	parts := []string{req.Nonce, req.Username, req.Password, "notadmin"}
	if req.Admin {
		parts[3] = "admin"
	}
	if req.UserType != nil {
		parts = append(parts, *req.UserType)
	}
	mac.Write([]byte(strings.Join(parts, "\x00")))
	got, err := hex.DecodeString(req.MAC)
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return nil, mxerr.Forbidden("HMAC incorrect")
	}
	acc, err := a.users.CreateAccount(r.Context(), users.NewAccount{
		Localpart: strings.ToLower(req.Username), Password: req.Password, IsAdmin: req.Admin,
	})
	if err != nil {
		return nil, err
	}
	if req.DisplayName != nil && *req.DisplayName != "" {
		name, _ := json.Marshal(*req.DisplayName)
		if err := a.users.SetProfileField(r.Context(), acc.UserID, "displayname", name); err != nil {
			return nil, err
		}
	}
	sess, err := a.users.CreateSession(r.Context(), users.NewSession{UserID: acc.UserID, Client: a.clientInfo(r)})
	if err != nil {
		return nil, err
	}
	a.log.WithField("user_id", acc.UserID).Info("registered user with the shared secret")
	return a.sessionResponse(sess), nil
}
