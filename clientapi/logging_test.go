package clientapi_test

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// logCapture is a logrus hook that keeps every entry as one line of text:
// the message and every field.
type logCapture struct {
	mu    sync.Mutex
	lines []string
}

func (c *logCapture) Levels() []logrus.Level { return logrus.AllLevels }

func (c *logCapture) Fire(e *logrus.Entry) error {
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.Level, e.Message)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, e.Data[k])
	}
	c.mu.Lock()
	c.lines = append(c.lines, b.String())
	c.mu.Unlock()
	return nil
}

func (c *logCapture) all() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n")
}

// No access token, refresh token or password may reach the server log,
// even at debug level and with the token in the query string.
func TestNoSecretsInLog(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) { c.Logging.Level = "debug" },
		withTokens(config.RegistrationToken{Token: "reg-token-5ecret"}))
	capture := &logCapture{}
	srv.Log.AddHook(capture)

	var secrets []string
	secret := func(s string) string {
		if s == "" {
			t.Fatal("empty secret")
		}
		secrets = append(secrets, s)
		return s
	}
	secret("reg-token-5ecret")
	pw1, pw2, wrong := secret("first-Pa55word"), secret("second-Pa55word"), secret("wrong-Pa55word")

	// Register (token flow), log in with refresh tokens, refresh.
	sess := wantFlows(t, post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": pw1}),
		"", "m.login.registration_token")
	post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": pw1,
		"auth": map[string]any{"type": "m.login.registration_token", "token": "wrong-reg-token", "session": sess}})
	r := post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": pw1,
		"auth": map[string]any{"type": "m.login.registration_token", "token": "reg-token-5ecret", "session": sess}}).
		expect(t, http.StatusOK, "")
	alice := sessionOf(t, r)
	secret(alice.AccessToken)
	loginRaw(t, srv, "alice", wrong, nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	s := login(t, srv, "alice", pw1, map[string]any{"refresh_token": true})
	secret(s.AccessToken)
	secret(s.RefreshToken)
	r = post(t, srv, v3+"/refresh", "", map[string]any{"refresh_token": s.RefreshToken}).expect(t, http.StatusOK, "")
	secret(r.str("access_token"))
	secret(r.str("refresh_token"))
	refreshed := r.str("access_token")

	// The token in the query string, on success and on failure.
	get(t, srv, v3+"/account/whoami?access_token="+refreshed, "").expect(t, http.StatusOK, "")
	get(t, srv, v3+"/account/whoami?access_token="+secret("tsa_guessed-token"), "").
		expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	do(t, srv, req{Method: "GET", Path: v3 + "/account/whoami",
		Headers: map[string]string{"Authorization": "Basic " + secret("YWxpY2U6c2VjcmV0")}}).
		expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	post(t, srv, v3+"/refresh", "", map[string]any{"refresh_token": secret("tsr_guessed-token")}).
		expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	post(t, srv, v3+"/logout?access_token="+refreshed, "", nil).expect(t, http.StatusOK, "")

	// A password change through UIA, with a wrong attempt first.
	sess = wantFlows(t, post(t, srv, v3+"/account/password?access_token="+alice.AccessToken, "",
		map[string]any{"new_password": pw2}), "", "m.login.password")
	post(t, srv, v3+"/account/password?access_token="+alice.AccessToken, "",
		map[string]any{"new_password": pw2, "auth": passwordAuth(sess, alice.UserID, wrong)})
	post(t, srv, v3+"/account/password?access_token="+alice.AccessToken, "",
		map[string]any{"new_password": pw2, "auth": passwordAuth(sess, alice.UserID, pw1)}).expect(t, http.StatusOK, "")

	// Shared-secret registration.
	admin := &synapseadmin.Client{Client: srv.Client("", "")}
	res, err := admin.SharedSecretRegister(ctx, testserver.SharedSecret, synapseadmin.ReqSharedSecretRegister{
		Username: "root", Password: secret("root-Pa55word"), Admin: true,
	})
	must(t, err, "shared-secret register")
	secret(res.AccessToken)
	secret(testserver.SharedSecret)

	// Log out everywhere with the token in the query string.
	post(t, srv, v3+"/logout/all?access_token="+alice.AccessToken, "", nil).expect(t, http.StatusOK, "")

	// A delayed event's ID, which alone lets anyone restart, send or
	// cancel it (MSC4140), used with and without an access token.
	bob := session{UserID: res.UserID.String(), AccessToken: res.AccessToken}
	roomID := adCreateRoom(t, srv, bob, map[string]any{})
	delayID := secret(put(t, srv, v3+"/rooms/"+roomID+"/send/m.room.message/t1?org.matrix.msc4140.delay=60000",
		bob.AccessToken, map[string]any{"msgtype": "m.text", "body": "later"}).expect(t, http.StatusOK, "").str("delay_id"))
	post(t, srv, dlPrefix+"/"+delayID+"/restart", "", map[string]any{}).expect(t, http.StatusOK, "")
	post(t, srv, dlPrefix+"/"+delayID, bob.AccessToken, map[string]any{"action": "send"}).expect(t, http.StatusOK, "")

	// The sync stream with the token as a subprotocol, as browsers open
	// it, and refused with an unknown one.
	w := wsConnect(t, srv, bob.AccessToken, wsOpts{tokenInProtocol: true})
	w.next(10 * time.Second)
	w.c.CloseNow()
	if c, _, err := wsDialRaw(srv, secret("syt_guessed-stream-token"), wsOpts{tokenInProtocol: true}); err == nil {
		c.CloseNow()
	}

	logged := capture.all()
	// The capture works: the requests above were logged.
	for _, want := range []string{"path=/_matrix/client/v3/login", "path=/_matrix/client/v3/refresh",
		"delayed_events/<redacted>/restart",
		"path=/_matrix/client/v3/account/whoami", "path=/_matrix/client/v3/logout", "status=401"} {
		if !strings.Contains(logged, want) {
			t.Fatalf("log lacks %q; is the hook seeing the request log?\n%s", want, logged)
		}
	}
	for _, s := range secrets {
		if strings.Contains(logged, s) {
			t.Errorf("secret %q appears in the log", s)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", logged)
	}
}
