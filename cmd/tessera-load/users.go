package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strings"
)

// registerParallel is how many users are registered at once. Servers hash
// each password with a deliberately slow function (Argon2id, bcrypt), so
// more at once would only contend for their CPU and memory.
const registerParallel = 4

// user is a registered account and its access token.
type user struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	DeviceID    string `json:"device_id"`
}

// userSource registers the run's users.
type userSource struct {
	c            *client
	sharedSecret string // shared-secret registration when set, else open registration
	runID        string
}

// newRunID returns 8 random characters of [a-z0-9]: valid in a user ID's
// localpart on every server, and unlikely to repeat between runs against
// the same database.
func newRunID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 8)
	for i := range b {
		b[i] = alphabet[mrand.IntN(len(alphabet))]
	}
	return string(b)
}

// registerAll registers one user per name, each as runID-name.
func (s *userSource) registerAll(ctx context.Context, names []string) ([]user, error) {
	users := make([]user, len(names))
	err := forEach(ctx, len(names), registerParallel, func(ctx context.Context, i int) error {
		u, err := s.register(ctx, s.runID+"-"+names[i])
		users[i] = u
		return err
	})
	return users, err
}

func (s *userSource) register(ctx context.Context, localpart string) (user, error) {
	password := rand.Text() // never used again, but servers require one
	var u user
	var err error
	if s.sharedSecret != "" {
		// A nonce is good for one attempt, so a 429 restarts from the nonce.
		err = s.c.retry429(ctx, "register "+localpart, func() error {
			u, err = s.registerShared(ctx, localpart, password)
			return err
		})
	} else {
		u, err = s.registerOpen(ctx, localpart, password)
	}
	if err != nil {
		return user{}, fmt.Errorf("register %s: %w", localpart, err)
	}
	if u.AccessToken == "" {
		return user{}, fmt.Errorf("register %s: response has no access_token", localpart)
	}
	return u, nil
}

// registerShared uses Synapse's shared-secret registration: GET a nonce,
// then POST the user with an HMAC-SHA1 over nonce, username, password and
// admin flag, NUL-separated, keyed with the secret.
// https://element-hq.github.io/synapse/latest/admin_api/register_api.html
func (s *userSource) registerShared(ctx context.Context, username, password string) (user, error) {
	const path = "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := s.c.do(ctx, http.MethodGet, path, nil, "", nil, &nonce); err != nil {
		return user{}, err
	}
	if nonce.Nonce == "" {
		return user{}, errors.New("GET " + path + ": response has no nonce")
	}
	var u user
	err := s.c.do(ctx, http.MethodPost, path, nil, "", map[string]any{
		"nonce":    nonce.Nonce,
		"username": username,
		"password": password,
		"admin":    false,
		"mac":      sharedSecretMAC(s.sharedSecret, nonce.Nonce, username, password),
	}, &u)
	return u, err
}

// sharedSecretMAC is hex(HMAC-SHA1(secret, nonce\0username\0password\0notadmin)).
func sharedSecretMAC(secret, nonce, username, password string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(strings.Join([]string{nonce, username, password, "notadmin"}, "\x00")))
	return hex.EncodeToString(mac.Sum(nil))
}

// registerOpen uses POST /register with User-Interactive Authentication:
// the first request is answered 401 with the flows and a session, the second
// completes the m.login.dummy stage in that session.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3register
func (s *userSource) registerOpen(ctx context.Context, username, password string) (user, error) {
	const path = clientV3 + "/register"
	body := map[string]any{
		"username":                    username,
		"password":                    password,
		"initial_device_display_name": "tessera-load",
	}
	var u user
	post := func() error { return s.c.do(ctx, http.MethodPost, path, nil, "", body, &u) }
	err := s.c.retry429(ctx, "register "+username, post)
	if err == nil {
		return u, nil // no authentication asked for
	}
	var me *matrixError
	if !errors.As(err, &me) || me.Status != http.StatusUnauthorized {
		return user{}, err
	}
	var uia struct {
		Session string `json:"session"`
		Flows   []struct {
			Stages []string `json:"stages"`
		} `json:"flows"`
	}
	if json.Unmarshal(me.Body, &uia) != nil || uia.Session == "" {
		return user{}, fmt.Errorf("expected a UIA challenge with a session: %w", err)
	}
	var flows [][]string
	dummy := false
	for _, f := range uia.Flows {
		flows = append(flows, f.Stages)
		dummy = dummy || slices.Equal(f.Stages, []string{"m.login.dummy"})
	}
	if !dummy {
		return user{}, fmt.Errorf("the server's registration flows are %v; tessera-load can only complete "+
			"m.login.dummy (use -shared-secret instead)", flows)
	}
	body["auth"] = map[string]string{"type": "m.login.dummy", "session": uia.Session}
	return u, s.c.retry429(ctx, "register "+username, post)
}
