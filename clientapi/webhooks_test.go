package clientapi_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// The built-in incoming webhooks (webhooks/, docs/webhooks.md), driven as
// GitHub and a Matrix client drive them: real GitHub payloads from npm's
// @octokit/webhooks-examples (pinned in webhooks/testdata/github), signed
// as GitHub signs them, and the bot's commands sent by mautrix clients.

const webhooksAPI = "/_tessera/webhooks/v1"

// githubExamplesDir holds the pinned @octokit/webhooks-examples.
var githubExamplesDir = filepath.Join("..", "webhooks", "testdata", "github")

// withWebhooks turns the webhooks on.
func withWebhooks(c *config.Config) { c.Webhooks.Enabled = true }

// githubExamples loads GitHub's example payloads by event name. Skipped on
// a developer's machine without node_modules; fails where
// TESSERA_REQUIRE_BROWSER is set (.ci/run runs npm ci there).
func githubExamples(t testing.TB) map[string][]json.RawMessage {
	t.Helper()
	path := filepath.Join(githubExamplesDir, "node_modules", "@octokit", "webhooks-examples", "api.github.com", "index.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		missingTool(t)("@octokit/webhooks-examples missing (run npm ci in webhooks/testdata/github): %v", err)
	}
	var index []struct {
		Name     string            `json:"name"`
		Examples []json.RawMessage `json:"examples"`
	}
	must(t, json.Unmarshal(raw, &index), "parse webhooks examples")
	out := map[string][]json.RawMessage{}
	for _, e := range index {
		out[e.Name] = e.Examples
	}
	return out
}

// example is one example payload, compacted, optionally changed by edit.
func example(t testing.TB, ex map[string][]json.RawMessage, name string, i int, edit func(map[string]any)) []byte {
	t.Helper()
	if len(ex[name]) <= i {
		t.Fatalf("no example %d of %s", i, name)
	}
	if edit == nil {
		var b bytes.Buffer
		must(t, json.Compact(&b, ex[name][i]), "compact example")
		return b.Bytes()
	}
	var m map[string]any
	must(t, json.Unmarshal(ex[name][i], &m), "decode example")
	edit(m)
	out, err := json.Marshal(m)
	must(t, err, "encode example")
	return out
}

func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// hookPath is the path of a hook's URL.
func hookPath(t testing.TB, hookURL string) string {
	t.Helper()
	u, err := url.Parse(hookURL)
	must(t, err, "parse hook URL")
	if !strings.HasPrefix(u.Path, webhooksAPI+"/hook/") {
		t.Fatalf("hook URL %q is not below %s/hook/", hookURL, webhooksAPI)
	}
	return u.Path
}

// deliver posts a GitHub delivery, signed with secret.
func deliver(t *testing.T, srv *testserver.Server, path, secret, eventType, deliveryID string, body []byte) resp {
	t.Helper()
	h := map[string]string{"X-GitHub-Event": eventType, "X-Hub-Signature-256": sign(secret, body),
		"User-Agent": "GitHub-Hookshot/test"}
	if deliveryID != "" {
		h["X-GitHub-Delivery"] = deliveryID
	}
	return do(t, srv, req{Method: http.MethodPost, Path: path, Body: body, Headers: h})
}

// botNotices lists the bot's m.notice events in the room, oldest first.
func botNotices(t *testing.T, c *mautrix.Client, roomID id.RoomID, bot id.UserID) []*event.Event {
	t.Helper()
	res, err := c.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 500)
	must(t, err, "messages")
	var out []*event.Event
	for i := len(res.Chunk) - 1; i >= 0; i-- {
		ev := res.Chunk[i]
		if ev.Sender == bot && ev.Type == event.EventMessage && ev.Content.Raw["msgtype"] == "m.notice" {
			out = append(out, ev)
		}
	}
	return out
}

// waitNotices waits until the bot has posted n notices in the room.
func waitNotices(t *testing.T, c *mautrix.Client, roomID id.RoomID, bot id.UserID, n int) []*event.Event {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := botNotices(t, c, roomID, bot)
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				t.Fatalf("bot notices: got %d, want %d", len(got), n)
			}
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitMembership waits until userID's membership in the room is want.
func waitMembership(t *testing.T, c *mautrix.Client, roomID id.RoomID, userID id.UserID, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var m struct {
			Membership string `json:"membership"`
		}
		err := c.StateEvent(ctx, roomID, event.StateMember, userID.String(), &m)
		if err == nil && m.Membership == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("membership of %s in %s: got %q (%v), want %q", userID, roomID, m.Membership, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func str(m map[string]any, key string) string { s, _ := m[key].(string); return s }

// createHook makes a hook through the management API.
func createHook(t testing.TB, srv *testserver.Server, token string, roomID id.RoomID, kind string) (hookID, path, secret string) {
	t.Helper()
	r := post(t, srv, webhooksAPI+"/rooms/"+url.PathEscape(roomID.String())+"/hooks", token, map[string]any{"kind": kind}).
		expect(t, http.StatusOK, "")
	hookID, secret = r.str("id"), r.str("secret")
	if hookID == "" || len(secret) < 32 {
		t.Fatalf("create hook: %s", r.Raw)
	}
	if !strings.HasSuffix(r.str("url"), webhooksAPI+"/hook/"+hookID) {
		t.Fatalf("hook url %q does not end with /hook/%s", r.str("url"), hookID)
	}
	return hookID, hookPath(t, r.str("url")), secret
}

// TestWebhooksGitHubEvents posts GitHub's example payload of every event
// type with notices, signed with the hook's secret, and reads each notice
// back from the room: its plain body and its HTML, with repository, links
// and names. A repeated X-GitHub-Delivery posts nothing.
func TestWebhooksGitHubEvents(t *testing.T) {
	ex := githubExamples(t)
	srv := testserver.Start(t, withWebhooks)
	alice := srv.Register("alice", "alice-password")
	bot := srv.UserID("webhooks")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	must(t, err, "create room")
	_, path, secret := createHook(t, srv, alice.AccessToken, room.RoomID, "github")
	waitMembership(t, alice, room.RoomID, bot, "join")

	repoLink := `<a href="https://github.com/Codertocat/Hello-World">Codertocat/Hello-World</a>`
	cases := []struct {
		name, event string
		payload     []byte
		body, html  []string
	}{
		{"ping", "ping", example(t, ex, "ping", 0, nil),
			[]string{"[Octocoders/Hello-World] Webhook connected by Codertocat", "Anything added dilutes everything else."},
			[]string{`<a href="https://github.com/Octocoders/Hello-World">Octocoders/Hello-World</a>`, "<b>Codertocat</b>"}},
		{"push", "push", example(t, ex, "push", 4, nil),
			[]string{"[Codertocat/Hello-World] Codertocat pushed 1 commit to branch master", "6113728", "Initial commit — Codertocat",
				"https://github.com/Codertocat/Hello-World/commit/6113728f27ae82c7b1a177c8d03f9e96e0adf246"},
			[]string{repoLink, "<b>master</b>",
				`<li><a href="https://github.com/Codertocat/Hello-World/commit/6113728f27ae82c7b1a177c8d03f9e96e0adf246">6113728</a> Initial commit — Codertocat</li>`}},
		{"push tag", "push", example(t, ex, "push", 0, nil),
			[]string{"Codertocat created tag simple-tag"}, []string{"<b>simple-tag</b>"}},
		{"issues", "issues", example(t, ex, "issues", 0, nil),
			[]string{"[Codertocat/Hello-World] Codertocat edited issue #1: Spelling error in the README file (https://github.com/Codertocat/Hello-World/issues/1)"},
			[]string{repoLink, `<a href="https://github.com/Codertocat/Hello-World/issues/1">#1: Spelling error in the README file</a>`}},
		{"issue_comment", "issue_comment", example(t, ex, "issue_comment", 0, nil),
			[]string{"Codertocat commented on issue #1: Spelling error in the README file", "> You are totally right!"},
			[]string{`href="https://github.com/Codertocat/Hello-World/issues/1#issuecomment-492700400"`, "<blockquote>You are totally right! I&#39;ll get this fixed right away.</blockquote>"}},
		{"pull_request", "pull_request", example(t, ex, "pull_request", 0, nil),
			[]string{"Codertocat opened pull request #2: Update the README with new information.", "(changes → master)"},
			[]string{`<a href="https://github.com/Codertocat/Hello-World/pull/2">#2: Update the README with new information.</a>`}},
		{"pull_request_review", "pull_request_review", example(t, ex, "pull_request_review", 0, nil),
			[]string{"Codertocat reviewed pull request #2: Update the README with new information."},
			[]string{`href="https://github.com/Codertocat/Hello-World/pull/2#pullrequestreview-237895671"`}},
		{"release", "release", example(t, ex, "release", 0, nil),
			[]string{"Codertocat published release 0.0.1", "https://github.com/Codertocat/Hello-World/releases/tag/0.0.1"},
			[]string{`<a href="https://github.com/Codertocat/Hello-World/releases/tag/0.0.1">0.0.1</a>`}},
		{"workflow_run failure", "workflow_run", example(t, ex, "workflow_run", 1, func(m map[string]any) {
			m["workflow_run"].(map[string]any)["conclusion"] = "failure"
		}),
			[]string{"[octo-org/octo-repo] ❌ Workflow test #163 (https://github.com/octo-org/octo-repo/actions/runs/289782451) failed on master: ci(action): update actions/setup-node digest to 8c91899"},
			[]string{`<a href="https://github.com/octo-org/octo-repo/actions/runs/289782451">test #163</a>`}},
		{"star", "star", example(t, ex, "star", 0, nil),
			[]string{"[Codertocat/Hello-World] Codertocat starred the repository (1 ★)"}, []string{repoLink}},
		{"other event", "fork", example(t, ex, "fork", 0, nil),
			[]string{"[Codertocat/Hello-World] GitHub event fork by Octocoders"}, []string{"<b>fork</b>"}},
		{"html escaped", "issues", example(t, ex, "issues", 0, func(m map[string]any) {
			m["issue"].(map[string]any)["title"] = `<script>alert("x")</script> & co`
		}),
			[]string{`#1: <script>alert("x")</script> & co`},
			[]string{`#1: &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co</a>`}},
	}
	ids := map[string]int{}
	for i, c := range cases {
		r := deliver(t, srv, path, secret, c.event, fmt.Sprintf("delivery-%d", i), c.payload).expect(t, http.StatusOK, "")
		if r.str("event_id") == "" {
			t.Fatalf("%s: no event_id: %s", c.name, r.Raw)
		}
		ids[r.str("event_id")] = i
	}
	// A workflow run that succeeded posts nothing.
	r := deliver(t, srv, path, secret, "workflow_run", "delivery-ok", example(t, ex, "workflow_run", 1, nil)).
		expect(t, http.StatusOK, "")
	if ok, _ := r.boolean("ignored"); !ok || r.str("event_id") != "" {
		t.Errorf("successful workflow run: %s", r.Raw)
	}

	got := waitNotices(t, alice, room.RoomID, bot, len(cases))
	for _, ev := range got {
		i, ok := ids[ev.ID.String()]
		if !ok {
			t.Errorf("unexpected notice %s: %v", ev.ID, ev.Content.Raw)
			continue
		}
		c := cases[i]
		body, html := str(ev.Content.Raw, "body"), str(ev.Content.Raw, "formatted_body")
		if f := str(ev.Content.Raw, "format"); f != "org.matrix.custom.html" {
			t.Errorf("%s: format %q", c.name, f)
		}
		for _, want := range c.body {
			if !strings.Contains(body, want) {
				t.Errorf("%s: body %q lacks %q", c.name, body, want)
			}
		}
		for _, want := range c.html {
			if !strings.Contains(html, want) {
				t.Errorf("%s: formatted_body %q lacks %q", c.name, html, want)
			}
		}
		if strings.Contains(html, "<script") {
			t.Errorf("%s: formatted_body has a script tag: %q", c.name, html)
		}
	}

	t.Run("redelivery dropped", func(t *testing.T) {
		body := example(t, ex, "star", 0, nil)
		first := deliver(t, srv, path, secret, "star", "dup-1", body).expect(t, http.StatusOK, "")
		again := deliver(t, srv, path, secret, "star", "dup-1", body).expect(t, http.StatusOK, "")
		if first.str("event_id") == "" || again.str("event_id") != "" {
			t.Fatalf("first %s, again %s", first.Raw, again.Raw)
		}
		if dup, _ := again.boolean("duplicate"); !dup {
			t.Errorf("repeat not marked duplicate: %s", again.Raw)
		}
		deliver(t, srv, path, secret, "star", "dup-2", body).expect(t, http.StatusOK, "")
		waitNotices(t, alice, room.RoomID, bot, len(cases)+2)

		// After a restart the hook still works and remembers its
		// deliveries.
		srv.Restart()
		again = deliver(t, srv, path, secret, "star", "dup-1", body).expect(t, http.StatusOK, "")
		if dup, _ := again.boolean("duplicate"); !dup {
			t.Errorf("repeat after restart not marked duplicate: %s", again.Raw)
		}
		deliver(t, srv, path, secret, "star", "dup-3", body).expect(t, http.StatusOK, "")
		waitNotices(t, alice, room.RoomID, bot, len(cases)+3)
	})
}

// TestWebhooksBadInput: every refused delivery answers with its status and
// error code, and posts nothing.
func TestWebhooksBadInput(t *testing.T) {
	srv := testserver.Start(t, withWebhooks, func(c *config.Config) {
		c.Webhooks.Rate = config.Rate{PerSecond: 0.001, Burst: 8}
	})
	alice := srv.Register("alice", "alice-password")
	bot := srv.UserID("webhooks")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	must(t, err, "create room")
	ghID, gh, secret := createHook(t, srv, alice.AccessToken, room.RoomID, "github")
	_, gen, genSecret := createHook(t, srv, alice.AccessToken, room.RoomID, "generic")

	ping := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)
	big := []byte(`{"zen":"` + strings.Repeat("x", 1<<20) + `"}`)
	type hdrs = map[string]string
	ghHeaders := func(sig string) hdrs { return hdrs{"X-GitHub-Event": "ping", "X-Hub-Signature-256": sig} }
	cases := []struct {
		name    string
		path    string
		body    any
		headers hdrs
		status  int
		errcode string
	}{
		{"unknown hook", webhooksAPI + "/hook/nosuchhook", ping, ghHeaders(sign(secret, ping)), 404, "M_NOT_FOUND"},
		{"missing signature", gh, ping, hdrs{"X-GitHub-Event": "ping"}, 401, "M_UNAUTHORIZED"},
		{"signature without sha256=", gh, ping, ghHeaders(strings.TrimPrefix(sign(secret, ping), "sha256=")), 401, "M_UNAUTHORIZED"},
		{"signature not hex", gh, ping, ghHeaders("sha256=zz"), 401, "M_UNAUTHORIZED"},
		{"signature with another secret", gh, ping, ghHeaders(sign("not-the-secret", ping)), 401, "M_UNAUTHORIZED"},
		{"signature of another body", gh, ping, ghHeaders(sign(secret, []byte(`{"zen":"other"}`))), 401, "M_UNAUTHORIZED"},
		{"sha1 signature only", gh, ping, hdrs{"X-GitHub-Event": "ping", "X-Hub-Signature": "sha1=0000"}, 401, "M_UNAUTHORIZED"},
		{"body over 1 MiB", gh, big, ghHeaders(sign(secret, big)), 413, "M_TOO_LARGE"},
		{"body over 1 MiB, chunked", gh, io.MultiReader(strings.NewReader(string(big))), ghHeaders(sign(secret, big)), 413, "M_TOO_LARGE"},
		{"malformed JSON", gh, []byte(`{"zen":`), ghHeaders(sign(secret, []byte(`{"zen":`))), 400, "M_NOT_JSON"},
		{"missing event type", gh, ping, hdrs{"X-Hub-Signature-256": sign(secret, ping)}, 400, "M_BAD_JSON"},
		{"generic without token", gen, `{"text":"hi"}`, nil, 401, "M_UNAUTHORIZED"},
		{"generic with a wrong token", gen, `{"text":"hi"}`, hdrs{"Authorization": "Bearer " + secret}, 401, "M_UNAUTHORIZED"},
		{"generic with the GitHub signature", gen, ping, ghHeaders(sign(genSecret, ping)), 401, "M_UNAUTHORIZED"},
		{"generic malformed JSON", gen, `{"text":`, hdrs{"Authorization": "Bearer " + genSecret}, 400, "M_NOT_JSON"},
		{"generic not an object", gen, `["hi"]`, hdrs{"Authorization": "Bearer " + genSecret}, 400, "M_BAD_JSON"},
		{"generic without text", gen, `{"username":"ci"}`, hdrs{"Authorization": "Bearer " + genSecret}, 400, "M_BAD_JSON"},
		{"generic text not a string", gen, `{"text":5}`, hdrs{"Authorization": "Bearer " + genSecret}, 400, "M_BAD_JSON"},
		{"generic over 1 MiB", gen, big, hdrs{"Authorization": "Bearer " + genSecret}, 413, "M_TOO_LARGE"},
		{"GET", gh, nil, nil, 405, "M_UNRECOGNIZED"},
	}
	for _, c := range cases {
		method := http.MethodPost
		if c.name == "GET" {
			method = http.MethodGet
		}
		r := do(t, srv, req{Method: method, Path: c.path, Body: c.body, Headers: c.headers})
		if r.Status != c.status || r.str("errcode") != c.errcode {
			t.Errorf("%s: got %d %s, want %d %s", c.name, r.Status, r.Raw, c.status, c.errcode)
		}
	}
	if n := len(botNotices(t, alice, room.RoomID, bot)); n != 0 {
		t.Fatalf("refused deliveries posted %d notices", n)
	}

	// A flood: the hook's burst of 8 passes, the next is refused. The
	// two authenticated deliveries refused above (malformed JSON, no
	// event type) took tokens; the unauthenticated ones took none.
	for i := 0; i < 6; i++ {
		deliver(t, srv, gh, secret, "ping", fmt.Sprintf("flood-%d", i), ping).expect(t, http.StatusOK, "")
	}
	r := deliver(t, srv, gh, secret, "ping", "flood-6", ping).expect(t, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	if _, ok := r.Body["retry_after_ms"].(float64); !ok {
		t.Errorf("429 without retry_after_ms: %s", r.Raw)
	}
	// Another hook has its own bucket.
	do(t, srv, req{Method: http.MethodPost, Path: gen, Body: `{"text":"still here"}`,
		Headers: map[string]string{"Authorization": "Bearer " + genSecret}}).expect(t, http.StatusOK, "")
	waitNotices(t, alice, room.RoomID, bot, 7)

	// Unknown hooks in the management API.
	del(t, srv, webhooksAPI+"/hooks/nosuchhook", alice.AccessToken, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	del(t, srv, webhooksAPI+"/hooks/"+ghID, alice.AccessToken, nil).expect(t, http.StatusOK, "")
	deliver(t, srv, gh, secret, "ping", "after-delete", ping).expect(t, http.StatusNotFound, "M_NOT_FOUND")
}

// TestWebhooksAPI: the management API needs an access token and the power
// to send state in the room; creating a hook brings the bot in.
func TestWebhooksAPI(t *testing.T) {
	srv := testserver.Start(t, withWebhooks)
	alice := srv.Register("alice", "alice-password")
	bob := srv.Register("bob", "bob-password")
	carol := srv.Register("carol", "carol-password")
	bot := srv.UserID("webhooks")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err, "create room")
	_, err = bob.JoinRoomByID(ctx, room.RoomID)
	must(t, err, "bob joins")
	hooks := webhooksAPI + "/rooms/" + url.PathEscape(room.RoomID.String()) + "/hooks"

	// The bot's user ID is taken (and reserved).
	r := post(t, srv, v3+"/register", "", map[string]any{"username": "webhooks", "password": "pw-12345678",
		"auth": map[string]any{"type": "m.login.dummy"}})
	if r.Status != http.StatusBadRequest || (r.str("errcode") != "M_USER_IN_USE" && r.str("errcode") != "M_EXCLUSIVE") {
		t.Errorf("register the bot's localpart: %d %s", r.Status, r.Raw)
	}

	post(t, srv, hooks, "", map[string]any{"kind": "github"}).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	post(t, srv, hooks, alice.AccessToken, map[string]any{"kind": "gitlab"}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	post(t, srv, hooks, alice.AccessToken, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	post(t, srv, hooks, alice.AccessToken, "{").expect(t, http.StatusBadRequest, "M_NOT_JSON")
	post(t, srv, hooks, bob.AccessToken, map[string]any{"kind": "github"}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	post(t, srv, hooks, carol.AccessToken, map[string]any{"kind": "github"}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	get(t, srv, hooks, bob.AccessToken).expect(t, http.StatusForbidden, "M_FORBIDDEN")

	id1, _, _ := createHook(t, srv, alice.AccessToken, room.RoomID, "github")
	waitMembership(t, alice, room.RoomID, bot, "join")
	id2, _, _ := createHook(t, srv, alice.AccessToken, room.RoomID, "generic")
	list := get(t, srv, hooks, alice.AccessToken).expect(t, http.StatusOK, "")
	items, _ := list.Body["hooks"].([]any)
	if len(items) != 2 {
		t.Fatalf("list: %s", list.Raw)
	}
	for i, want := range []string{id1, id2} {
		h := items[i].(map[string]any)
		if h["id"] != want || h["enabled"] != true || h["secret"] != nil || h["created_by"] != alice.UserID.String() {
			t.Errorf("hook %d: %v", i, h)
		}
	}
	del(t, srv, webhooksAPI+"/hooks/"+id1, bob.AccessToken, nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")

	// Once bob may send state, he may manage hooks.
	_, err = alice.SendStateEvent(ctx, room.RoomID, event.StatePowerLevels, "", map[string]any{
		"users": map[string]int{bob.UserID.String(): 50}, "state_default": 50,
	})
	must(t, err, "power levels")
	del(t, srv, webhooksAPI+"/hooks/"+id1, bob.AccessToken, nil).expect(t, http.StatusOK, "")
	del(t, srv, webhooksAPI+"/hooks/"+id1, bob.AccessToken, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	list = get(t, srv, hooks, bob.AccessToken).expect(t, http.StatusOK, "")
	if items, _ := list.Body["hooks"].([]any); len(items) != 1 {
		t.Errorf("list after delete: %s", list.Raw)
	}
}

// TestWebhooksGeneric posts hookshot's generic shape, with the secret as a
// Bearer token or ?token=.
func TestWebhooksGeneric(t *testing.T) {
	srv := testserver.Start(t, withWebhooks)
	alice := srv.Register("alice", "alice-password")
	bot := srv.UserID("webhooks")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	must(t, err, "create room")
	_, path, secret := createHook(t, srv, alice.AccessToken, room.RoomID, "generic")

	do(t, srv, req{Method: http.MethodPost, Path: path, Body: map[string]any{"text": "Build 42 passed", "username": "CI <bot>"},
		Headers: map[string]string{"Authorization": "Bearer " + secret}}).expect(t, http.StatusOK, "")
	do(t, srv, req{Method: http.MethodPost, Path: path + "?token=" + secret,
		Body: map[string]any{"text": "Deployed", "html": "<b>Deployed</b> v1.2"}}).expect(t, http.StatusOK, "")
	do(t, srv, req{Method: http.MethodPost, Path: path + "?token=" + secret,
		Body: map[string]any{"html": "<i>only</i> html"}}).expect(t, http.StatusOK, "")

	got := waitNotices(t, alice, room.RoomID, bot, 3)
	want := []struct{ body, html string }{
		{"CI <bot>: Build 42 passed", ""},
		{"Deployed", "<b>Deployed</b> v1.2"},
		{"only html", "<i>only</i> html"},
	}
	for i, w := range want {
		c := got[i].Content.Raw
		if str(c, "body") != w.body || str(c, "formatted_body") != w.html {
			t.Errorf("notice %d: %v, want body %q html %q", i, c, w.body, w.html)
		}
	}
	// The username is escaped in HTML.
	do(t, srv, req{Method: http.MethodPost, Path: path, Body: map[string]any{"text": "x", "html": "<p>y</p>", "username": "<img>"},
		Headers: map[string]string{"Authorization": "Bearer " + secret}}).expect(t, http.StatusOK, "")
	got = waitNotices(t, alice, room.RoomID, bot, 4)
	if h := str(got[3].Content.Raw, "formatted_body"); h != "<strong>&lt;img&gt;</strong>: <p>y</p>" {
		t.Errorf("escaped username: %q", h)
	}
}

var (
	urlRE    = regexp.MustCompile(`(?:Payload URL|URL): (\S+)`)
	secretRE = regexp.MustCompile(`Secret: ([0-9a-f]+)`)
	idRE     = regexp.MustCompile(`webhook ([0-9a-f]+)\.`)
)

// TestWebhooksBot drives the bot from mautrix clients: invited, it joins;
// an admin's "!webhook github" answers with a URL and secret that work;
// a user without power is refused; list and remove; kicking the bot
// disables the room's hooks.
func TestWebhooksBot(t *testing.T) {
	srv := testserver.Start(t, withWebhooks)
	alice := srv.Register("alice", "alice-password")
	bob := srv.Register("bob", "bob-password")
	bot := srv.UserID("webhooks")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err, "create room")
	_, err = bob.JoinRoomByID(ctx, room.RoomID)
	must(t, err, "bob joins")
	_, err = alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bot})
	must(t, err, "invite the bot")
	waitMembership(t, alice, room.RoomID, bot, "join")

	say := func(c *mautrix.Client, text string) {
		t.Helper()
		_, err := c.SendText(ctx, room.RoomID, text)
		must(t, err, "send "+text)
	}
	n := 0
	answer := func() string {
		t.Helper()
		n++
		got := waitNotices(t, alice, room.RoomID, bot, n)
		return str(got[n-1].Content.Raw, "body")
	}

	say(alice, "!webhook github")
	created := answer()
	m, s, i := urlRE.FindStringSubmatch(created), secretRE.FindStringSubmatch(created), idRE.FindStringSubmatch(created)
	if m == nil || s == nil || i == nil || !strings.Contains(created, "Content type: application/json") {
		t.Fatalf("answer to !webhook github: %q", created)
	}
	hookID, path, secret := i[1], hookPath(t, m[1]), s[1]
	deliver(t, srv, path, secret, "ping", "bot-1", []byte(`{"zen":"Design for failure.","hook_id":7}`)).
		expect(t, http.StatusOK, "")
	if got := answer(); !strings.Contains(got, "Webhook connected: “Design for failure.”") {
		t.Errorf("ping notice: %q", got)
	}

	say(bob, "!webhook github")
	if got := answer(); !strings.Contains(got, "you need the power level to send state events") {
		t.Errorf("refusal: %q", got)
	}
	say(bob, "!webhook remove "+hookID)
	if got := answer(); !strings.Contains(got, "you need the power level") {
		t.Errorf("refusal: %q", got)
	}
	hooks := webhooksAPI + "/rooms/" + url.PathEscape(room.RoomID.String()) + "/hooks"
	if items, _ := get(t, srv, hooks, alice.AccessToken).Body["hooks"].([]any); len(items) != 1 {
		t.Fatalf("hooks after bob's attempts: %v", items)
	}

	say(alice, "!webhook generic")
	gen := answer()
	gm, gs := urlRE.FindStringSubmatch(gen), secretRE.FindStringSubmatch(gen)
	if gm == nil || gs == nil {
		t.Fatalf("answer to !webhook generic: %q", gen)
	}
	say(alice, "!webhook list")
	if got := answer(); !strings.Contains(got, "2 webhook(s)") || !strings.Contains(got, hookID+" github") {
		t.Errorf("list: %q", got)
	}
	say(alice, "!webhook remove "+hookID)
	if got := answer(); !strings.Contains(got, "Removed webhook "+hookID) {
		t.Errorf("remove: %q", got)
	}
	deliver(t, srv, path, secret, "ping", "bot-2", []byte(`{"zen":"x"}`)).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	say(alice, "!webhook frobnicate")
	if got := answer(); !strings.HasPrefix(got, "Usage: !webhook github") {
		t.Errorf("usage: %q", got)
	}

	// Kicked, the bot's hooks stop: 410, and the list says disabled.
	_, err = alice.KickUser(ctx, room.RoomID, &mautrix.ReqKickUser{UserID: bot, Reason: "bye"})
	must(t, err, "kick the bot")
	genPath, genSecret := hookPath(t, gm[1]), gs[1]
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := do(t, srv, req{Method: http.MethodPost, Path: genPath, Body: map[string]any{"text": "after kick"},
			Headers: map[string]string{"Authorization": "Bearer " + genSecret}})
		if r.Status == http.StatusGone {
			r.expect(t, http.StatusGone, "M_NOT_FOUND")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("generic hook after the kick: %d %s", r.Status, r.Raw)
		}
		// The kick is handled asynchronously; a delivery in between
		// finds the bot gone and disables the hooks itself.
		time.Sleep(50 * time.Millisecond)
	}
	if items, _ := get(t, srv, hooks, alice.AccessToken).Body["hooks"].([]any); len(items) != 1 ||
		items[0].(map[string]any)["enabled"] != false {
		t.Errorf("hooks after the kick: %v", items)
	}
	if got := botNotices(t, alice, room.RoomID, bot); len(got) != n {
		t.Errorf("notices after the kick: %d, want %d", len(got), n)
	}

	// A hook made since brings the bot back and works; the old one stays
	// disabled.
	_, newPath, newSecret := createHook(t, srv, alice.AccessToken, room.RoomID, "generic")
	waitMembership(t, alice, room.RoomID, bot, "join")
	do(t, srv, req{Method: http.MethodPost, Path: newPath, Body: map[string]any{"text": "back"},
		Headers: map[string]string{"Authorization": "Bearer " + newSecret}}).expect(t, http.StatusOK, "")
	do(t, srv, req{Method: http.MethodPost, Path: genPath, Body: map[string]any{"text": "old"},
		Headers: map[string]string{"Authorization": "Bearer " + genSecret}}).expect(t, http.StatusGone, "M_NOT_FOUND")
	if got := waitNotices(t, alice, room.RoomID, bot, n+1); str(got[n].Content.Raw, "body") != "back" {
		t.Errorf("notice from the new hook: %v", got[n].Content.Raw)
	}
}

// TestWebhooksBotEncryptedRoom: the bot has no end-to-end encryption, so
// in an encrypted room it says once that it cannot read commands (when it
// joins one, and when a room it is in turns encryption on) rather than
// ignoring them silently; hooks still post there.
func TestWebhooksBotEncryptedRoom(t *testing.T) {
	srv := testserver.Start(t, withWebhooks)
	alice := srv.Register("alice", "alice-password")
	bot := srv.UserID("webhooks")
	encryption := []*event.Event{{Type: event.StateEncryption, Content: event.Content{
		Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}
	var enc mautrix.RespCreateRoom
	_, err := alice.MakeRequest(ctx, "POST", alice.BuildClientURL("v3", "createRoom"),
		&mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: encryption}, &enc)
	must(t, err, "create an encrypted room")
	_, err = alice.InviteUser(ctx, enc.RoomID, &mautrix.ReqInviteUser{UserID: bot})
	must(t, err, "invite the bot")
	got := waitNotices(t, alice, enc.RoomID, bot, 1)
	if body := str(got[0].Content.Raw, "body"); !strings.Contains(body, "This room is encrypted, so I cannot read commands") ||
		!strings.Contains(body, "/_tessera/webhooks/v1/rooms/"+enc.RoomID.String()+"/hooks") {
		t.Errorf("notice in the encrypted room: %q", body)
	}
	// Hooks made through the API post there.
	_, path, secret := createHook(t, srv, alice.AccessToken, enc.RoomID, "generic")
	do(t, srv, req{Method: http.MethodPost, Path: path, Body: map[string]any{"text": "deployed"},
		Headers: map[string]string{"Authorization": "Bearer " + secret}}).expect(t, http.StatusOK, "")
	if got := waitNotices(t, alice, enc.RoomID, bot, 2); str(got[1].Content.Raw, "body") != "deployed" {
		t.Errorf("hook notice: %v", got[1].Content.Raw)
	}

	// A plain room where the bot is, then encryption turned on.
	plain, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	must(t, err, "create room")
	_, err = alice.InviteUser(ctx, plain.RoomID, &mautrix.ReqInviteUser{UserID: bot})
	must(t, err, "invite the bot")
	waitMembership(t, alice, plain.RoomID, bot, "join")
	if n := len(botNotices(t, alice, plain.RoomID, bot)); n != 0 {
		t.Fatalf("%d notices in an unencrypted room", n)
	}
	_, err = alice.SendStateEvent(ctx, plain.RoomID, event.StateEncryption, "",
		&event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1})
	must(t, err, "turn on encryption")
	if got := waitNotices(t, alice, plain.RoomID, bot, 1); !strings.Contains(str(got[0].Content.Raw, "body"), "This room is encrypted") {
		t.Errorf("notice after encryption was turned on: %v", got[0].Content.Raw)
	}
}
