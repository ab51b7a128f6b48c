//go:build linux

package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/lkrelay"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// browserDir holds the scenario and package.json pinning puppeteer-core;
// .ci/run installs Debian's chromium and runs npm ci there.
const browserDir = "testdata/browser"

// browserTools returns node and chromium, or skips (fails in CI).
func browserTools(t testing.TB) (node, chromium string) {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	missing := testserver.MissingTool(t)
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		missing("chromium not installed (.ci/run installs Debian's chromium)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node not installed (.ci/run installs Debian's nodejs)")
	}
	if _, err := os.Stat(filepath.Join(browserDir, "node_modules", "puppeteer-core", "package.json")); err != nil {
		missing("puppeteer-core missing (run npm ci in web/%s): %v", browserDir, err)
	}
	return node, chromium
}

// artifactsDir is where the screenshots go: $TESSERA_ARTIFACTS, or
// web/testdata/artifacts (ignored by git).
func artifactsDir(t testing.TB) string {
	dir := os.Getenv("TESSERA_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "artifacts")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// scenarioMsg is one line from scenario.mjs.
type scenarioMsg struct {
	Step string `json:"step"`
	Ask  string `json:"ask"`
	Log  string `json:"log"`
	Fail string `json:"fail"`
	Done bool   `json:"done"`

	RoomID string `json:"room_id"`
	Body   string `json:"body"`
	Raw    json.RawMessage
}

// runScenario runs scenario.mjs with env and answers its questions with
// answer; it returns the steps' data by name.
func runScenario(t testing.TB, env []string, answer func(scenarioMsg) any) map[string]json.RawMessage {
	t.Helper()
	// Calls on a loaded 2-core machine under -race take minutes.
	return runScenarioFor(t, 6*time.Minute, env, answer)
}

// runScenarioFor is runScenario with a time limit of its own.
func runScenarioFor(t testing.TB, limit time.Duration, env []string, answer func(scenarioMsg) any) map[string]json.RawMessage {
	t.Helper()
	node, chromium := browserTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "scenario.mjs")
	cmd.Dir = browserDir
	cmd.Env = append(os.Environ(), append(env, "CHROMIUM="+chromium, "ARTIFACTS="+artifactsDir(t))...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	steps := map[string]json.RawMessage{}
	done := false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "@@ ")
		if !ok {
			t.Logf("scenario: %s", sc.Text())
			continue
		}
		var m scenarioMsg
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("scenario line %q: %v", line, err)
		}
		m.Raw = json.RawMessage(line)
		switch {
		case m.Fail != "":
			t.Errorf("scenario failed after steps %v: %s", keys(steps), m.Fail)
		case m.Log != "":
			t.Logf("browser: %s", m.Log)
		case m.Step != "":
			t.Logf("step %s: %s", m.Step, line)
			steps[m.Step] = m.Raw
		case m.Ask != "":
			reply, err := json.Marshal(answer(m))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fmt.Fprintf(stdin, "%s\n", reply); err != nil {
				t.Fatalf("answering %s: %v", m.Ask, err)
			}
		case m.Done:
			done = true
		}
	}
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil || !done {
		t.Fatalf("scenario did not finish (%v) after steps %v; stderr:\n%s", err, keys(steps), stderr.String())
	}
	return steps
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func writePNG(t *testing.T) string {
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for y := 0; y < 48; y++ {
		for x := 0; x < 64; x++ {
			img.Set(x, y, color.RGBA{uint8(x * 4), uint8(y * 5), 160, 255})
		}
	}
	path := filepath.Join(t.TempDir(), "picture.png")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBrowserChat: two people sign up in the web client, befriend each
// other, chat (typing, message and read receipt each within a second),
// reply, edit and delete, create a private room with an address and
// invites, share an image; a mautrix-go user in the room sends 200
// messages that the page scrolls back through and exchanges a message
// with the page; hostile HTML, display names and room names do not run.
func TestBrowserChat(t *testing.T) {
	browserTools(t)
	srv := testserver.Start(t)
	carol := srv.Register("carol", "carol password 1")
	ctx := context.Background()
	fail := func(format string, args ...any) any {
		t.Errorf(format, args...)
		return map[string]string{"error": fmt.Sprintf(format, args...)}
	}

	steps := runScenario(t, []string{"BASE_URL=" + srv.URL, "IMAGE=" + writePNG(t), "SCENARIO=chat"}, func(m scenarioMsg) any {
		room := id.RoomID(m.RoomID)
		switch m.Ask {
		case "carol":
			return map[string]string{"user_id": carol.UserID.String()}
		case "carol-fill":
			if _, err := carol.JoinRoomByID(ctx, room); err != nil {
				return fail("carol joins %s: %v", room, err)
			}
			for i := 1; i <= 200; i++ {
				if _, err := carol.SendText(ctx, room, fmt.Sprintf("history %d", i)); err != nil {
					return fail("carol sends: %v", err)
				}
			}
			if _, err := carol.SendText(ctx, room, "from mautrix-go"); err != nil {
				return fail("carol sends: %v", err)
			}
			return map[string]string{}
		case "carol-got":
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				msgs, err := carol.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 10)
				if err != nil {
					return fail("carol reads: %v", err)
				}
				for _, ev := range msgs.Chunk {
					if ev.Type == event.EventMessage && ev.Sender.String() == "@alice:tessera.test" {
						var c struct{ Body string }
						_ = json.Unmarshal(ev.Content.VeryRaw, &c)
						if c.Body == m.Body {
							return map[string]string{}
						}
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
			return fail("mautrix-go never saw %q from the page", m.Body)
		case "xss":
			hostileName := `<img src=x onerror=window.__xss=1>`
			if err := carol.SetDisplayName(ctx, hostileName); err != nil {
				return fail("display name: %v", err)
			}
			content := map[string]any{
				"msgtype": "m.text",
				"body":    "hostile body <script>window.__xss=2</script>",
				"format":  "org.matrix.custom.html",
				"formatted_body": `hostile body <script>window.__xss=2</script><img src=x onerror="window.__xss=2">` +
					`<a href="javascript:window.__xss=2">link</a><iframe src="javascript:window.__xss=2"></iframe>` +
					`<b onclick="window.__xss=2" style="position:fixed">bold</b><svg><script>window.__xss=2</script></svg>` +
					`<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=2>`,
			}
			if _, err := carol.SendMessageEvent(ctx, room, event.EventMessage, content); err != nil {
				return fail("hostile message: %v", err)
			}
			if _, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{
				Name:   `<img src=x onerror=window.__xss=3>`,
				Topic:  `<script>window.__xss=3</script>`,
				Preset: "private_chat",
				Invite: []id.UserID{"@alice:tessera.test", "@bob:tessera.test"},
			}); err != nil {
				return fail("hostile room: %v", err)
			}
			// An encrypted room, with a message no one here can decrypt.
			enc, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{
				Name:   "Secret",
				Preset: "private_chat",
				Invite: []id.UserID{"@alice:tessera.test"},
				InitialState: []*event.Event{{Type: event.StateEncryption, StateKey: new(string),
					Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}},
			})
			if err != nil {
				return fail("encrypted room: %v", err)
			}
			if _, err := carol.SendMessageEvent(ctx, enc.RoomID, event.EventEncrypted, map[string]any{
				"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg",
				"device_id": carol.DeviceID, "sender_key": "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA",
				"session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ",
			}); err != nil {
				return fail("encrypted message: %v", err)
			}
			return map[string]string{}
		case "public":
			if _, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{
				Name: "Lobby", RoomAliasName: "lobby", Preset: "public_chat", Visibility: "public", Topic: "Say hello",
			}); err != nil {
				return fail("public room: %v", err)
			}
			return map[string]string{}
		}
		return fail("unknown question %q", m.Ask)
	})
	for _, want := range []string{"signed-up", "befriended", "chatted", "edited-replied-deleted", "private-room", "mautrix", "scrolled-back", "image", "xss", "encrypted", "relogin", "directory", "kicked"} {
		if _, ok := steps[want]; !ok {
			t.Errorf("step %s not done", want)
		}
	}
	noTokenURLs(t, steps)
	// Five rounds of each, measured inside the pages (key press to render),
	// not across puppeteer's round trips, so that a loaded machine's
	// scheduling of the test itself does not count; the median of each
	// must be within a second.
	if raw, ok := steps["chatted"]; ok {
		var got struct {
			Typing  []int `json:"typing_ms"`
			Message []int `json:"message_ms"`
			Receipt []int `json:"receipt_ms"`
		}
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatalf("chatted step: %v %s", err, raw)
		}
		for name, ms := range map[string][]int{"typing": got.Typing, "message": got.Message, "read receipt": got.Receipt} {
			if len(ms) != 5 {
				t.Errorf("%s: %d rounds measured, want 5", name, len(ms))
				continue
			}
			med := median(ms)
			t.Logf("%s seen by the other page after %v ms (median %d ms)", name, ms, med)
			if slices.Min(ms) < 0 || med > 1000 {
				t.Errorf("%s seen by the other page after %v ms, want a median within 1 s", name, ms)
			}
		}
	}
	t.Logf("screenshots in %s", artifactsDir(t))
}

// noTokenURLs checks the scenario's "urls" step: the pages opened the
// WebSocket sync stream, and no URL they asked for (HTTP or WebSocket)
// held an access token.
func noTokenURLs(t *testing.T, steps map[string]json.RawMessage) {
	t.Helper()
	var got struct {
		Requests  int      `json:"requests"`
		Streams   int      `json:"streams"`
		WithToken []string `json:"with_token"`
	}
	if err := json.Unmarshal(steps["urls"], &got); err != nil {
		t.Fatalf("urls step: %v %s", err, steps["urls"])
	}
	if got.Streams == 0 || got.Requests == 0 {
		t.Errorf("the pages opened %d streams in %d requests", got.Streams, got.Requests)
	}
	if len(got.WithToken) > 0 {
		t.Errorf("URLs with an access token: %q", got.WithToken)
	}
}

// hundredRooms starts a server with a user in 100 rooms (every tenth with
// another member and five messages) and runs the rooms100 scenario, which
// logs in and reloads the page runs times. It returns the scenario's data.
func hundredRooms(t testing.TB, runs int) (got struct {
	RunsMS  []int `json:"runs_ms"`
	JSBytes int   `json:"js_bytes"`
	Cold    []struct {
		Name     string
		Decoded  int
		Transfer int
		Encoded  int
	}
}) {
	browserTools(t)
	srv := testserver.Start(t)
	user := srv.Register("hundred", "hundred password 1")
	other := srv.Register("other", "other password 1")
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		resp, err := user.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: fmt.Sprintf("Room %03d", i), Preset: "private_chat"})
		if err != nil {
			t.Fatalf("room %d: %v", i, err)
		}
		if i%10 != 0 {
			continue
		}
		if _, err := user.InviteUser(ctx, resp.RoomID, &mautrix.ReqInviteUser{UserID: other.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := other.JoinRoomByID(ctx, resp.RoomID); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 5; j++ {
			if _, err := other.SendText(ctx, resp.RoomID, fmt.Sprintf("message %d", j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	steps := runScenario(t, []string{"BASE_URL=" + srv.URL, "SCENARIO=rooms100", "USER_NAME=hundred",
		"PASSWORD=hundred password 1", fmt.Sprintf("RUNS=%d", runs)},
		func(m scenarioMsg) any { return map[string]string{} })
	if err := json.Unmarshal(steps["rooms100"], &got); err != nil || len(got.RunsMS) != runs {
		t.Fatalf("rooms100 step: %v %s", err, steps["rooms100"])
	}
	return got
}

func median(xs []int) int {
	s := append([]int(nil), xs...)
	sort.Ints(s)
	return s[len(s)/2]
}

// TestBrowserHundredRooms: for a user in 100 rooms, the room list fills
// and a room opens from it, and the first load's JavaScript is at most
// 300 KB uncompressed and served compressed. How fast the list comes is
// BenchmarkBrowserRoomList's business.
func TestBrowserHundredRooms(t *testing.T) {
	got := hundredRooms(t, 1)
	decoded, encoded := 0, 0
	for _, f := range got.Cold {
		decoded += f.Decoded
		encoded += f.Encoded
	}
	t.Logf("first load JS %d bytes uncompressed, %d bytes on the wire (gzip), %d files; room list after %d ms",
		decoded, encoded, len(got.Cold), got.RunsMS[0])
	if decoded > 300*1024 {
		t.Errorf("first load JavaScript is %d bytes, over 300 KB", decoded)
	}
	if decoded == 0 || encoded >= decoded {
		t.Errorf("JavaScript not measured or not compressed: decoded %d, encoded %d", decoded, encoded)
	}
}

// BenchmarkBrowserRoomList measures the time from navigation to an
// interactive room list of 100 rooms (the target is 1 s on loopback), as
// the median of five reloads per iteration:
//
//	go test -tags goolm,sqlite_fts5 -run '^$' -bench BrowserRoomList -benchtime 1x ./web
func BenchmarkBrowserRoomList(b *testing.B) {
	var all []int
	for i := 0; i < b.N; i++ {
		all = append(all, hundredRooms(b, 5).RunsMS...)
	}
	b.ReportMetric(float64(median(all)), "ms-to-room-list")
	b.Logf("room list of 100 rooms interactive after %v ms (median %d ms)", all, median(all))
}

// TestBrowserSignUpToken: on a server with registration tokens and a
// password policy, the sign-up form asks for the token, shows the policy's
// error for a weak password, and signs in with a good one.
func TestBrowserSignUpToken(t *testing.T) {
	browserTools(t)
	srv := testserver.Start(t, func(c *config.Config) {
		c.Registration.Open = false
		c.Registration.Tokens = []config.RegistrationToken{{Token: "let-me-in"}}
		c.Passwords.MinLength = 12
		c.Passwords.RequireDigit = true
		// Short-lived access tokens: the page must refresh its own.
		c.Auth.AccessTokenLifetime = config.Duration(3 * time.Second)
	})
	steps := runScenario(t, []string{"BASE_URL=" + srv.URL, "SCENARIO=signup-token", "REG_TOKEN=let-me-in"},
		func(m scenarioMsg) any { return map[string]string{} })
	var got struct {
		WeakError string `json:"weak_error"`
	}
	if err := json.Unmarshal(steps["signup-token"], &got); err != nil {
		t.Fatalf("signup-token step: %v %s", err, steps["signup-token"])
	}
	if _, ok := steps["refreshed"]; !ok {
		t.Errorf("no refreshed step")
	}
	if !strings.Contains(strings.ToLower(got.WeakError), "password") {
		t.Errorf("weak password error reads %q", got.WeakError)
	}
	if _, err := srv.Client("", "").Login(context.Background(), &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "dana"},
		Password: "a much longer password 1",
	}); err != nil {
		t.Errorf("dana cannot log in with the password the page registered: %v", err)
	}
}

// TestBrowserCall: two people in a video room join its call with
// Chromium's fake camera and microphone, through the MatrixRTC
// membership, the token service and the embedded SFU; each page decodes
// the other's video. Muting shows on the other side, and leaving removes
// the tile.
func TestBrowserCall(t *testing.T) {
	browserTools(t)
	srv := testserver.Start(t, testserver.Calls())
	// The pages' signalling goes through lkrelay.PublishAfterTrackPublished
	// (see throughRelay in scenario.mjs and TestCallsBrowser).
	relay := httptest.NewServer(lkrelay.PublishAfterTrackPublished())
	defer relay.Close()
	relayURL := "ws://" + strings.TrimPrefix(relay.URL, "http://")
	steps := runScenario(t, []string{"BASE_URL=" + srv.URL, "SCENARIO=call", "RELAY_URL=" + relayURL},
		func(m scenarioMsg) any { return map[string]string{} })
	var got struct {
		AliceSees, BobSees struct {
			From          string
			Width, Height int
		}
		MS int
	}
	raw, ok := steps["call"]
	if !ok {
		t.Fatalf("no call step")
	}
	var m struct {
		AliceSees json.RawMessage `json:"alice_sees"`
		BobSees   json.RawMessage `json:"bob_sees"`
		MS        int             `json:"ms"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(m.AliceSees, &got.AliceSees)
	_ = json.Unmarshal(m.BobSees, &got.BobSees)
	// /sfu/get identities are "@user:server:DEVICE".
	if !strings.HasPrefix(got.AliceSees.From, "@bob:tessera.test:") || !strings.HasPrefix(got.BobSees.From, "@alice:tessera.test:") {
		t.Errorf("alice sees %q, bob sees %q", got.AliceSees.From, got.BobSees.From)
	}
	if got.AliceSees.Width <= 0 || got.BobSees.Width <= 0 {
		t.Errorf("decoded frames: %+v %+v", got.AliceSees, got.BobSees)
	}
	t.Logf("both pages decode the other's video %d ms after the first join (%dx%d, %dx%d)",
		m.MS, got.AliceSees.Width, got.AliceSees.Height, got.BobSees.Width, got.BobSees.Height)
}

// TestBrowserElementCall: our web client and matrix-js-sdk's
// MatrixRTCSession (the membership code of Element Call, Element Web and
// Element X) in one call, each way round: whoever starts it, the other
// follows its focus, gets a token from our /sfu/get for the same LiveKit
// room, and each side sees the other as a call member and decodes the
// other's video. See elementCall in scenario.mjs.
func TestBrowserElementCall(t *testing.T) {
	browserTools(t)
	sdk := filepath.Join("..", "clientapi", "testdata", "jssdk", "node_modules", "matrix-js-sdk", "package.json")
	if _, err := os.Stat(sdk); err != nil {
		testserver.MissingTool(t)("matrix-js-sdk missing (run npm ci in clientapi/testdata/jssdk): %v", err)
	}
	srv := testserver.Start(t, testserver.Calls())
	bob := srv.Register("bob", "bob password 1")
	relay := httptest.NewServer(lkrelay.PublishAfterTrackPublished())
	defer relay.Close()
	steps := runScenario(t, []string{"BASE_URL=" + srv.URL, "SCENARIO=element-call",
		"RELAY_URL=ws://" + strings.TrimPrefix(relay.URL, "http://"),
		"BOB_USER=" + bob.UserID.String(), "BOB_TOKEN=" + bob.AccessToken, "BOB_DEVICE=" + bob.DeviceID.String()},
		func(m scenarioMsg) any { return map[string]string{} })
	service := srv.URL + "/_tessera/livekit/jwt"
	aliceIdentity := ""
	for _, name := range []string{"web-first", "js-sdk-first"} {
		raw, ok := steps[name]
		if !ok {
			t.Errorf("step %s not done", name)
			continue
		}
		var got interopStep
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// matrix-js-sdk parses the web client's membership as a member of
		// the room's call, with /sfu/get's identity and our focus.
		a := got.AliceMember
		if a.UserID != "@alice:tessera.test" || a.DeviceID == "" || a.Slot != "m.call#ROOM" ||
			a.Identity != a.UserID+":"+a.DeviceID || a.Transport.LivekitServiceURL != service {
			t.Errorf("%s: matrix-js-sdk sees the web client's membership as %+v", name, a)
		}
		if got.BobFocus.LivekitServiceURL != service || got.BobFocus.LivekitAlias == "" {
			t.Errorf("%s: bob's focus %+v", name, got.BobFocus)
		}
		// Each decodes the other's video, from the identity the
		// membership announces.
		bobIdentity := bob.UserID.String() + ":" + bob.DeviceID.String()
		if got.BobSees.From != a.Identity || got.BobSees.Width <= 0 {
			t.Errorf("%s: bob's page sees %+v, want video from %s", name, got.BobSees, a.Identity)
		}
		if got.AliceSees.From != bobIdentity || got.AliceSees.Width <= 0 {
			t.Errorf("%s: the web client sees %+v, want video from %s", name, got.AliceSees, bobIdentity)
		}
		if name == "web-first" {
			aliceIdentity = a.Identity
			if b := got.BobMember; b.UserID != bob.UserID.String() || b.Identity != bobIdentity {
				t.Errorf("bob's own membership reads %+v", b)
			}
		} else {
			if a.Identity != aliceIdentity {
				t.Errorf("the web client's identity changed: %s then %s", aliceIdentity, a.Identity)
			}
			// The web client joined the call matrix-js-sdk started.
			if got.Oldest != bob.UserID.String() {
				t.Errorf("the oldest membership is %q's, want bob's", got.Oldest)
			}
		}
		t.Logf("%s: bob (matrix-js-sdk) decodes %dx%d from %s; the web client decodes %dx%d from %s",
			name, got.BobSees.Width, got.BobSees.Height, got.BobSees.From, got.AliceSees.Width, got.AliceSees.Height, got.AliceSees.From)
	}
}

// interopStep is what TestBrowserElementCall's scenario reports of a call.
type interopStep struct {
	AliceMember rtcMember `json:"alice_member"`
	BobMember   rtcMember `json:"bob_member"`
	Oldest      string    `json:"oldest"`
	BobFocus    struct {
		LivekitServiceURL string `json:"livekit_service_url"`
		LivekitAlias      string `json:"livekit_alias"`
	} `json:"bob_focus"`
	BobSees   decodedVideo `json:"bob_sees"`
	AliceSees decodedVideo `json:"alice_sees"`
}

// rtcMember is a matrix-js-sdk CallMembership, as the scenario reads it.
type rtcMember struct {
	UserID    string `json:"user_id"`
	DeviceID  string `json:"device_id"`
	Identity  string `json:"identity"`
	Slot      string `json:"slot"`
	Transport struct {
		LivekitServiceURL string `json:"livekit_service_url"`
		LivekitAlias      string `json:"livekit_alias"`
	} `json:"transport"`
}

type decodedVideo struct {
	From          string `json:"from"`
	Width, Height int
}

// TestBrowserAccount: a user with another device (mautrix-go here) changes
// the password in the web client (the other device stays logged in, as
// the page asks), logs that device out from the device list after
// re-entering the password (its token then gets 401 M_UNKNOWN_TOKEN), and
// logs in again with the new password, the old one refused.
func TestBrowserAccount(t *testing.T) {
	browserTools(t)
	srv := testserver.Start(t)
	other := srv.Register("erin", "erin password 1")
	steps := runScenario(t, []string{"BASE_URL=" + srv.URL, "SCENARIO=account", "USER_NAME=erin",
		"PASSWORD=erin password 1", "NEW_PASSWORD=erin password 2"}, func(m scenarioMsg) any {
		if m.Ask != "other-token" {
			t.Errorf("unknown question %q", m.Ask)
			return map[string]string{}
		}
		_, err := other.Whoami(context.Background())
		var herr mautrix.HTTPError
		switch {
		case err == nil:
			return map[string]string{"errcode": ""}
		case errors.As(err, &herr) && herr.RespError != nil:
			if herr.Response.StatusCode != 401 {
				t.Errorf("the other device's token: %d %s", herr.Response.StatusCode, herr.RespError.ErrCode)
			}
			return map[string]string{"errcode": herr.RespError.ErrCode}
		default:
			return map[string]string{"errcode": err.Error()}
		}
	})
	noTokenURLs(t, steps)
	var removed struct {
		DeviceID     string `json:"device_id"`
		ListedBefore int    `json:"listed_before"`
	}
	if err := json.Unmarshal(steps["device-removed"], &removed); err != nil {
		t.Fatalf("device-removed step: %v %s", err, steps["device-removed"])
	}
	if removed.DeviceID != other.DeviceID.String() || removed.ListedBefore != 2 {
		t.Errorf("the page logged out %q of %d devices, want %s of 2", removed.DeviceID, removed.ListedBefore, other.DeviceID)
	}
	var relogged struct {
		OldPasswordError string `json:"old_password_error"`
	}
	if err := json.Unmarshal(steps["relogged"], &relogged); err != nil {
		t.Fatalf("relogged step: %v %s", err, steps["relogged"])
	}
	if relogged.OldPasswordError == "" {
		t.Errorf("the old password got no error")
	}
	t.Logf("the old password reads %q", relogged.OldPasswordError)
}
