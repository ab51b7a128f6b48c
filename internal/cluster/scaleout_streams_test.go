package cluster_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
	"github.com/tessera-hs/tessera/syncapi"
)

// rawSync is what the stream tests read of a /sync response.
type rawSync struct {
	NextBatch   string `json:"next_batch"`
	AccountData struct {
		Events []rawEvent `json:"events"`
	} `json:"account_data"`
	Presence struct {
		Events []rawEvent `json:"events"`
	} `json:"presence"`
	ToDevice struct {
		Events []rawEvent `json:"events"`
	} `json:"to_device"`
	DeviceLists struct {
		Changed []string `json:"changed"`
	} `json:"device_lists"`
	OTKCounts map[string]int `json:"device_one_time_keys_count"`
	Rooms     struct {
		Join map[string]struct {
			Ephemeral struct {
				Events []rawEvent `json:"events"`
			} `json:"ephemeral"`
			Unread struct {
				Notifications int `json:"notification_count"`
			} `json:"unread_notifications"`
		} `json:"join"`
	} `json:"rooms"`
}

type rawEvent struct {
	Type    string          `json:"type"`
	Sender  string          `json:"sender"`
	Content json.RawMessage `json:"content"`
}

// syncRaw runs one /sync as cli (set_presence offline, so that the
// readers themselves change no one's presence), long-polling for timeout
// when since is set.
func syncRaw(ctx context.Context, cli *mautrix.Client, since string, timeout time.Duration) (*rawSync, error) {
	q := map[string]string{"set_presence": "offline", "timeout": strconv.FormatInt(timeout.Milliseconds(), 10)}
	if since != "" {
		q["since"] = since
	}
	var out rawSync
	if _, err := cli.MakeRequest(ctx, "GET", cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, q), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// streamReader long-polls /sync through one instance and collects what a
// stream case picks out of each response, checking that no position of
// the token ever goes back.
type streamReader struct {
	inst string
	cli  *mautrix.Client
	// seen is the case's own memory (extract may use it).
	seen map[string]bool

	mu    sync.Mutex
	items []string
	err   error
}

func (r *streamReader) got() ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.items), r.err
}

func (r *streamReader) run(ctx context.Context, since string, extract func(r *streamReader, s *rawSync) []string) {
	prev, err := syncapi.ParseToken(since)
	if err != nil {
		r.fail(err)
		return
	}
	for ctx.Err() == nil {
		s, err := syncRaw(ctx, r.cli, since, 10*time.Second)
		if err != nil {
			if ctx.Err() == nil {
				r.fail(err)
			}
			return
		}
		tok, err := syncapi.ParseToken(s.NextBatch)
		if err != nil {
			r.fail(err)
			return
		}
		for i := range prev {
			if tok.Pos(i) < prev.Pos(i) {
				r.fail(fmt.Errorf("through %s: position %d of the token went back from %s to %s", r.inst, i, since, s.NextBatch))
				return
			}
		}
		items := extract(r, s)
		r.mu.Lock()
		r.items = append(r.items, items...)
		r.mu.Unlock()
		since, prev = s.NextBatch, tok
	}
}

func (r *streamReader) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

// streamCase is one stream: the n-th write through an instance, what
// readers pick out of a response, and what they must have picked after
// the n-th write.
type streamCase struct {
	name    string
	readers func(inst string) *mautrix.Client
	setup   func(t *testing.T)
	write   func(t *testing.T, n int, via string)
	extract func(r *streamReader, s *rawSync) []string
	want    func(n int) string
}

// The writes of each stream through any instance reach the long-polling
// syncs through all three, each within a few seconds, in order, once,
// and with tokens whose positions never go back.
func TestScaleOutStreams(t *testing.T) {
	c := startScaleOut(t)
	ctx := context.Background()
	c.joinAll(t, c.bob)
	room := c.rooms["a"]

	// A device of bob's per reader: to-device queues are per device, and
	// a reader acknowledges what it got.
	bobDevices := map[string]*mautrix.Client{}
	for _, inst := range c.names {
		bobDevices[inst] = login(t, c.srv[inst], c.bob.UserID, "password-bob")
	}
	bobOn := func(inst string) *mautrix.Client { return bobDevices[inst] }
	aliceOn := func(inst string) *mautrix.Client { return as(c.srv[inst], c.alice) }

	const writes = 6
	var messages []id.EventID
	aliceDevices := map[int]string{}
	cases := []streamCase{{
		name:    "account_data",
		readers: aliceOn,
		write: func(t *testing.T, n int, via string) {
			if err := aliceOn(via).SetAccountData(ctx, fmt.Sprintf("org.example.s%d", n), map[string]any{"n": n}); err != nil {
				t.Fatal(err)
			}
		},
		extract: func(_ *streamReader, s *rawSync) []string {
			var out []string
			for _, ev := range s.AccountData.Events {
				if strings.HasPrefix(ev.Type, "org.example.s") {
					out = append(out, ev.Type)
				}
			}
			return out
		},
		want: func(n int) string { return fmt.Sprintf("org.example.s%d", n) },
	}, {
		name:    "to_device",
		readers: bobOn,
		write: func(t *testing.T, n int, via string) {
			content := map[id.DeviceID]*event.Content{}
			for _, d := range bobDevices {
				content[d.DeviceID] = &event.Content{Raw: map[string]any{"n": n}}
			}
			if _, err := aliceOn(via).SendToDevice(ctx, event.NewEventType("org.example.msg"),
				&mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{c.bob.UserID: content}}); err != nil {
				t.Fatal(err)
			}
		},
		extract: func(_ *streamReader, s *rawSync) []string {
			var out []string
			for _, ev := range s.ToDevice.Events {
				var body struct{ N int }
				if ev.Type == "org.example.msg" && json.Unmarshal(ev.Content, &body) == nil {
					out = append(out, strconv.Itoa(body.N))
				}
			}
			return out
		},
		want: strconv.Itoa,
	}, {
		name:    "receipts",
		readers: bobOn,
		setup: func(t *testing.T) {
			for i := range writes {
				resp, err := aliceOn("a").SendText(ctx, room, fmt.Sprintf("to read %d", i))
				if err != nil {
					t.Fatal(err)
				}
				messages = append(messages, resp.EventID)
			}
		},
		write: func(t *testing.T, n int, via string) {
			if err := aliceOn(via).SendReceipt(ctx, room, messages[n], event.ReceiptTypeRead, nil); err != nil {
				t.Fatal(err)
			}
		},
		extract: func(_ *streamReader, s *rawSync) []string {
			var out []string
			for _, ev := range s.Rooms.Join[room.String()].Ephemeral.Events {
				var content map[string]map[string]map[string]any
				if ev.Type != "m.receipt" || json.Unmarshal(ev.Content, &content) != nil {
					continue
				}
				for evID, byType := range content {
					if _, ok := byType["m.read"][c.alice.UserID.String()]; ok {
						out = append(out, evID)
					}
				}
			}
			return out
		},
		want: func(n int) string { return messages[n].String() },
	}, {
		name:    "presence",
		readers: bobOn,
		write: func(t *testing.T, n int, via string) {
			if err := aliceOn(via).SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline,
				StatusMsg: fmt.Sprintf("status %d", n)}); err != nil {
				t.Fatal(err)
			}
		},
		extract: func(_ *streamReader, s *rawSync) []string {
			var out []string
			for _, ev := range s.Presence.Events {
				var body struct {
					StatusMsg string `json:"status_msg"`
				}
				if ev.Sender == c.alice.UserID.String() && json.Unmarshal(ev.Content, &body) == nil &&
					strings.HasPrefix(body.StatusMsg, "status ") {
					out = append(out, body.StatusMsg)
				}
			}
			return out
		},
		want: func(n int) string { return fmt.Sprintf("status %d", n) },
	}, {
		// Alice starts and stops typing in turn in b's room: b keeps the
		// room's typing users, whichever process she tells.
		name:    "typing",
		readers: bobOn,
		write: func(t *testing.T, n int, via string) {
			if _, err := aliceOn(via).UserTyping(ctx, c.rooms["b"], n%2 == 0, 30*time.Second); err != nil {
				t.Fatal(err)
			}
		},
		// The items are numbered (the n-th change this reader saw):
		// the sets repeat.
		extract: func(r *streamReader, s *rawSync) []string {
			var out []string
			for _, ev := range s.Rooms.Join[c.rooms["b"].String()].Ephemeral.Events {
				var body struct {
					UserIDs []string `json:"user_ids"`
				}
				if ev.Type == "m.typing" && json.Unmarshal(ev.Content, &body) == nil {
					k := 0
					for r.seen[fmt.Sprint("typing ", k)] {
						k++
					}
					r.seen[fmt.Sprint("typing ", k)] = true
					out = append(out, fmt.Sprint(k, body.UserIDs))
				}
			}
			return out
		},
		want: func(n int) string {
			if n%2 == 0 {
				return fmt.Sprint(n, []string{c.alice.UserID.String()})
			}
			return fmt.Sprint(n, []string{})
		},
	}, {
		// Each write is a new device of alice's with its keys: bob's
		// syncs hear that alice changed and, asking through their own
		// instance, find the new device.
		name:    "device_lists",
		readers: bobOn,
		write: func(t *testing.T, n int, via string) {
			d := login(t, c.srv[via], c.alice.UserID, "password-alice")
			uploadDeviceKeys(t, d)
			aliceDevices[n] = d.DeviceID.String()
		},
		extract: func(r *streamReader, s *rawSync) []string {
			if !slices.Contains(s.DeviceLists.Changed, c.alice.UserID.String()) {
				return nil
			}
			resp, err := r.cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{c.alice.UserID: {}}})
			if err != nil {
				r.fail(err)
				return nil
			}
			var out []string
			for deviceID := range resp.DeviceKeys[c.alice.UserID] {
				if !r.seen[deviceID.String()] {
					r.seen[deviceID.String()] = true
					out = append(out, deviceID.String())
				}
			}
			slices.Sort(out)
			return out
		},
		want: func(n int) string { return aliceDevices[n] },
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			runStreamCase(t, c, tc, writes)
		})
	}
}

// runStreamCase starts a reader on every instance, makes the writes one at
// a time through the instances in turn, and checks that each reaches every
// reader within 5 s, and that in the end each has every write once, in
// order.
func runStreamCase(t *testing.T, c *scaleOut, tc streamCase, writes int) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	var readers []*streamReader
	for _, inst := range c.names {
		r := &streamReader{inst: inst, cli: tc.readers(inst), seen: map[string]bool{}}
		first, err := syncRaw(ctx, r.cli, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		tc.extract(r, first) // what is there already (device_lists: nothing, as the sync is initial)
		readers = append(readers, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(ctx, first.NextBatch, tc.extract)
		}()
	}
	// The readers are waiting (their first long-poll is on its way).
	time.Sleep(200 * time.Millisecond)
	var want []string
	var slowest time.Duration
	for n := range writes {
		via := c.names[n%len(c.names)]
		start := time.Now()
		tc.write(t, n, via)
		want = append(want, tc.want(n))
		for _, r := range readers {
			for {
				got, err := r.got()
				if err != nil {
					t.Fatal(err)
				}
				if slices.Contains(got, want[n]) {
					break
				}
				if time.Since(start) > 5*time.Second {
					t.Fatalf("write %d through %s: not seen through %s within 5 s (seen %v)", n, via, r.inst, got)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		slowest = max(slowest, time.Since(start))
	}
	// Anything sent twice would come within a moment.
	time.Sleep(500 * time.Millisecond)
	for _, r := range readers {
		got, err := r.got()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("through %s: got %v, want %v", r.inst, got, want)
		}
	}
	t.Logf("%d writes, each seen through all three instances within %v", writes, slowest.Round(time.Millisecond))
}

// login logs userID in once more through srv: a new device.
func login(t *testing.T, srv *testserver.Server, userID id.UserID, password string) *mautrix.Client {
	t.Helper()
	cli := srv.Client("", "")
	resp, err := cli.Login(context.Background(), &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: userID.String()},
		Password:   password,
	})
	if err != nil {
		t.Fatalf("login %s: %v", userID, err)
	}
	out := srv.Client(resp.UserID, resp.AccessToken)
	out.DeviceID = resp.DeviceID
	return out
}

// uploadDeviceKeys uploads self-signed identity keys for cli's device.
func uploadDeviceKeys(t *testing.T, cli *mautrix.Client) ed25519.PrivateKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	curve := make([]byte, 32)
	_, _ = rand.Read(curve)
	b64 := base64.RawStdEncoding.EncodeToString
	dev := cli.DeviceID.String()
	keys := signed(t, map[string]any{
		"user_id": cli.UserID, "device_id": dev,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]any{"curve25519:" + dev: b64(curve), "ed25519:" + dev: b64(pub)},
	}, cli.UserID.String(), dev, priv)
	if _, err := cli.MakeRequest(context.Background(), "POST", cli.BuildClientURL("v3", "keys", "upload"),
		map[string]any{"device_keys": keys}, nil); err != nil {
		t.Fatalf("upload device keys: %v", err)
	}
	return priv
}

// signed is obj signed by signer's key ed25519:keyName.
func signed(t *testing.T, obj map[string]any, signer, keyName string, key ed25519.PrivateKey) map[string]any {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	out, err := gomatrixserverlib.SignJSON(signer, gomatrixserverlib.KeyID("ed25519:"+keyName), key, raw)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// What the other processes write while one is down reaches its syncs once
// it is back: positions and data are in the database, and a restarted
// process starts from them.
func TestScaleOutStreamsRestart(t *testing.T) {
	c := startScaleOut(t)
	ctx := context.Background()
	c.joinAll(t, c.bob)
	room := c.rooms["a"]
	msg, err := as(c.srv["a"], c.alice).SendText(ctx, room, "read me")
	if err != nil {
		t.Fatal(err)
	}
	bobB := login(t, c.srv["b"], c.bob.UserID, "password-bob")
	first, err := syncRaw(ctx, bobB, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	c.srv["b"].Stop()
	aliceA, aliceC := as(c.srv["a"], c.alice), as(c.srv["c"], c.alice)
	if err := aliceA.SendReceipt(ctx, room, msg.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := aliceC.SendToDevice(ctx, event.NewEventType("org.example.msg"), &mautrix.ReqSendToDevice{
		Messages: map[id.UserID]map[id.DeviceID]*event.Content{c.bob.UserID: {bobB.DeviceID: {Raw: map[string]any{"n": 1}}}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := aliceC.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "while b was down"}); err != nil {
		t.Fatal(err)
	}
	if err := as(c.srv["a"], c.bob).SetAccountData(ctx, "org.example.restart", map[string]any{"n": 1}); err != nil {
		t.Fatal(err)
	}
	uploadDeviceKeys(t, login(t, c.srv["a"], c.alice.UserID, "password-alice"))
	c.srv["b"].Restart()

	s, err := syncRaw(ctx, bobB, first.NextBatch, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Whatever the first response left out comes with the next ones.
	for range 5 {
		more, err := syncRaw(ctx, bobB, s.NextBatch, 0)
		if err != nil {
			t.Fatal(err)
		}
		s.AccountData.Events = append(s.AccountData.Events, more.AccountData.Events...)
		s.ToDevice.Events = append(s.ToDevice.Events, more.ToDevice.Events...)
		s.Presence.Events = append(s.Presence.Events, more.Presence.Events...)
		s.DeviceLists.Changed = append(s.DeviceLists.Changed, more.DeviceLists.Changed...)
		if r, ok := more.Rooms.Join[room.String()]; ok {
			jr := s.Rooms.Join[room.String()]
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, r.Ephemeral.Events...)
			s.Rooms.Join[room.String()] = jr
		}
		s.NextBatch = more.NextBatch
	}
	has := func(evs []rawEvent, typ, sender, inContent string) bool {
		return slices.ContainsFunc(evs, func(ev rawEvent) bool {
			return ev.Type == typ && (sender == "" || ev.Sender == sender) && strings.Contains(string(ev.Content), inContent)
		})
	}
	checks := []struct {
		what string
		ok   bool
	}{
		{"receipt", has(s.Rooms.Join[room.String()].Ephemeral.Events, "m.receipt", "", msg.EventID.String())},
		{"to-device message", has(s.ToDevice.Events, "org.example.msg", c.alice.UserID.String(), `"n":1`)},
		{"presence", has(s.Presence.Events, "m.presence", c.alice.UserID.String(), "while b was down")},
		{"account data", has(s.AccountData.Events, "org.example.restart", "", `"n":1`)},
		{"device list change", slices.Contains(s.DeviceLists.Changed, c.alice.UserID.String())},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("the %s written while b was down is not in b's sync after its restart", ch.what)
		}
	}
}

// A typing timeout runs once, on the room's owner, whichever process the
// typing went through, and every process's syncs see it end.
func TestScaleOutTypingTimeout(t *testing.T) {
	c := startScaleOut(t)
	c.joinAll(t, c.bob)
	room := c.rooms["b"]
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	extract := func(_ *streamReader, s *rawSync) []string {
		var out []string
		for _, ev := range s.Rooms.Join[room.String()].Ephemeral.Events {
			var body struct {
				UserIDs []string `json:"user_ids"`
			}
			if ev.Type == "m.typing" && json.Unmarshal(ev.Content, &body) == nil {
				out = append(out, fmt.Sprint(body.UserIDs))
			}
		}
		return out
	}
	var readers []*streamReader
	for _, inst := range c.names {
		r := &streamReader{inst: inst, cli: as(c.srv[inst], c.bob), seen: map[string]bool{}}
		first, err := syncRaw(ctx, r.cli, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(ctx, first.NextBatch, extract)
		}()
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := as(c.srv["a"], c.alice).UserTyping(ctx, room, true, time.Second); err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprint([]string{c.alice.UserID.String()}), fmt.Sprint([]string{})}
	// Generous: under CI's load (30 on 2 cores) the owner's timer, the
	// announcement and the readers' wake-ups took more than 6 s once.
	deadline := time.Now().Add(20 * time.Second)
	for _, r := range readers {
		for {
			got, err := r.got()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) >= len(want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("through %s: typing %v, want %v within 20 s", r.inst, got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond)
	for _, r := range readers {
		if got, _ := r.got(); !slices.Equal(got, want) {
			t.Errorf("through %s: typing %v, want %v", r.inst, got, want)
		}
	}
}

// A user who synced once through one process and then keeps syncing
// through another (a load balancer without stickiness) stays online past
// the offline timeout (30 s after the last sync ended): the timers run on
// the user's owner, which counts the syncs of every process. With a timer
// per process, the first would take the user offline 30 s after its sync,
// and the second, which had published online already, would not say
// otherwise.
func TestScaleOutPresenceStaysOnline(t *testing.T) {
	if testing.Short() {
		t.Skip("runs past the 30 s offline timeout")
	}
	c := startScaleOut(t)
	ctx := context.Background()
	c.joinAll(t, c.bob)
	owner := c.m.Owner(c.bob.UserID.String())
	var others []string
	for _, inst := range c.names {
		if inst != owner {
			others = append(others, inst)
		}
	}
	status := func() string {
		t.Helper()
		var body struct {
			Presence string `json:"presence"`
		}
		alice := as(c.srv[owner], c.alice)
		if _, err := alice.MakeRequest(ctx, "GET", alice.BuildClientURL("v3", "presence", c.bob.UserID, "status"), nil, &body); err != nil {
			t.Fatal(err)
		}
		return body.Presence
	}
	since := ""
	end := time.Now().Add(40 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		bob := as(c.srv[others[min(i, 1)]], c.bob)
		q := map[string]string{"timeout": "2000"}
		if since != "" {
			q["since"] = since
		}
		var s rawSync
		if _, err := bob.MakeRequest(ctx, "GET", bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, q), nil, &s); err != nil {
			t.Fatal(err)
		}
		since = s.NextBatch
		if i > 0 && i%5 == 0 {
			if p := status(); p != "online" {
				t.Fatalf("bob, syncing through %s once and then through %s, is %q after %d syncs", others[0], others[1], p, i)
			}
		}
	}
	if p := status(); p != "online" {
		t.Fatalf("bob, syncing through %s once and then through %s for 40 s, is %q", others[0], others[1], p)
	}
}
