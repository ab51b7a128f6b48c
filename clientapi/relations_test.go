package clientapi_test

// Tests of event relationships: /relations, /threads, the aggregations
// bundled in unsigned.m.relations, unsigned.membership, and the checks on
// sending relations. Helpers are prefixed "rel".

import (
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// relSend sends an event of type typ with content and returns its ID.
func relSend(t testing.TB, srv *testserver.Server, s session, roomID, typ string, content map[string]any) string {
	t.Helper()
	return rmSendRaw(t, srv, s, roomID, typ, rmTxn(), content).expect(t, http.StatusOK, "").str("event_id")
}

func relTo(relType, target string) map[string]any {
	return map[string]any{"rel_type": relType, "event_id": target}
}

// relReact sends an m.reaction with key to target.
func relReact(t testing.TB, srv *testserver.Server, s session, roomID, target, key string) resp {
	t.Helper()
	rel := relTo("m.annotation", target)
	rel["key"] = key
	return rmSendRaw(t, srv, s, roomID, "m.reaction", rmTxn(), map[string]any{"m.relates_to": rel})
}

// relEdit sends an edit of target.
func relEdit(t testing.TB, srv *testserver.Server, s session, roomID, typ, target, body string) string {
	t.Helper()
	return relSend(t, srv, s, roomID, typ, map[string]any{
		"msgtype": "m.text", "body": "* " + body,
		"m.new_content": map[string]any{"msgtype": "m.text", "body": body},
		"m.relates_to":  relTo("m.replace", target),
	})
}

// relThreadReply sends a message in the thread of root.
func relThreadReply(t testing.TB, srv *testserver.Server, s session, roomID, root, body string) string {
	t.Helper()
	return relSend(t, srv, s, roomID, "m.room.message", map[string]any{
		"msgtype": "m.text", "body": body, "m.relates_to": relTo("m.thread", root),
	})
}

// relRelations calls /relations; path is eventID[/relType[/eventType]].
func relRelations(t testing.TB, srv *testserver.Server, s session, roomID string, path []string, q url.Values) resp {
	t.Helper()
	p := v1 + "/rooms/" + url.PathEscape(roomID) + "/relations"
	for _, part := range path {
		p += "/" + url.PathEscape(part)
	}
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return get(t, srv, p, s.AccessToken)
}

// relEvent reads one event with /event.
func relEvent(t testing.TB, srv *testserver.Server, s session, roomID, eventID string) map[string]any {
	t.Helper()
	return get(t, srv, rmRoom(roomID, "event", eventID), s.AccessToken).expect(t, http.StatusOK, "").Body
}

func wantIDs(t testing.TB, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

// TestRelations checks /relations: filtering by relation and event type,
// both directions, pagination, recursion, and its refusals.
func TestRelations(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	carol := rmUser(t, srv, "carol")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	rmJoin(t, srv, bob, room).expect(t, http.StatusOK, "")

	root := rmSend(t, srv, alice, room, "root")
	react1 := relReact(t, srv, bob, room, root, "👍").expect(t, http.StatusOK, "").str("event_id")
	edit := relEdit(t, srv, alice, room, "m.room.message", root, "root, edited")
	// A /sync next_batch taken here is a pagination token too.
	mid := syncGet(t, srv, alice, url.Values{}).expect(t, http.StatusOK, "").str("next_batch")
	reply := relThreadReply(t, srv, bob, room, root, "in thread")
	react2 := relReact(t, srv, alice, room, root, "🎉").expect(t, http.StatusOK, "").str("event_id")
	ref := relSend(t, srv, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "see", "m.relates_to": relTo("m.reference", root)})
	// A grandchild: a reaction to the thread reply.
	grand := relReact(t, srv, alice, room, reply, "👀").expect(t, http.StatusOK, "").str("event_id")
	rmSend(t, srv, alice, room, "unrelated")

	all := relRelations(t, srv, alice, room, []string{root}, nil).expect(t, http.StatusOK, "")
	wantIDs(t, "all relations", rmIDs(rmEvents(t, all, "chunk")), []string{ref, react2, reply, edit, react1})
	if _, ok := all.Body["recursion_depth"]; ok {
		t.Errorf("recursion_depth without recurse: %s", all.Raw)
	}
	if _, ok := all.Body["next_batch"]; ok {
		t.Errorf("next_batch on the only page: %s", all.Raw)
	}

	older := relRelations(t, srv, alice, room, []string{root}, url.Values{"from": {mid}}).expect(t, http.StatusOK, "")
	wantIDs(t, "relations before a sync token", rmIDs(rmEvents(t, older, "chunk")), []string{edit, react1})
	newer := relRelations(t, srv, alice, room, []string{root}, url.Values{"to": {mid}}).expect(t, http.StatusOK, "")
	wantIDs(t, "relations after a sync token", rmIDs(rmEvents(t, newer, "chunk")), []string{ref, react2, reply})

	byType := relRelations(t, srv, alice, room, []string{root, "m.annotation"}, nil).expect(t, http.StatusOK, "")
	wantIDs(t, "m.annotation relations", rmIDs(rmEvents(t, byType, "chunk")), []string{react2, react1})
	byEvType := relRelations(t, srv, alice, room, []string{root, "m.thread", "m.room.message"}, nil).expect(t, http.StatusOK, "")
	wantIDs(t, "m.thread m.room.message relations", rmIDs(rmEvents(t, byEvType, "chunk")), []string{reply})
	none := relRelations(t, srv, alice, room, []string{root, "m.thread", "m.reaction"}, nil).expect(t, http.StatusOK, "")
	wantIDs(t, "m.thread m.reaction relations", rmIDs(rmEvents(t, none, "chunk")), []string{})

	fwd := relRelations(t, srv, alice, room, []string{root}, url.Values{"dir": {"f"}}).expect(t, http.StatusOK, "")
	wantIDs(t, "forward relations", rmIDs(rmEvents(t, fwd, "chunk")), []string{react1, edit, reply, react2, ref})

	// Pages of two, backwards then forwards, cover everything once.
	for _, dir := range []string{"b", "f"} {
		var got []string
		q := url.Values{"limit": {"2"}, "dir": {dir}}
		for page := 0; ; page++ {
			if page > 5 {
				t.Fatalf("dir=%s: pagination never ends", dir)
			}
			r := relRelations(t, srv, alice, room, []string{root}, q).expect(t, http.StatusOK, "")
			chunk := rmEvents(t, r, "chunk")
			if len(chunk) > 2 {
				t.Fatalf("dir=%s: page of %d events with limit 2", dir, len(chunk))
			}
			got = append(got, rmIDs(chunk)...)
			if q.Get("from") != "" && r.str("prev_batch") != q.Get("from") {
				t.Errorf("prev_batch = %q, want the from token %q", r.str("prev_batch"), q.Get("from"))
			}
			next := r.str("next_batch")
			if next == "" {
				break
			}
			q.Set("from", next)
		}
		want := []string{ref, react2, reply, edit, react1}
		if dir == "f" {
			slices.Reverse(want)
		}
		wantIDs(t, "paginated dir="+dir, got, want)
	}

	// recurse takes the reaction to the thread reply too.
	rec := relRelations(t, srv, alice, room, []string{root}, url.Values{"recurse": {"true"}, "limit": {"10"}}).expect(t, http.StatusOK, "")
	wantIDs(t, "recursive relations", rmIDs(rmEvents(t, rec, "chunk")), []string{grand, ref, react2, reply, edit, react1})
	if d, _ := rec.Body["recursion_depth"].(float64); d < 3 {
		t.Errorf("recursion_depth = %v, want at least 3: %s", rec.Body["recursion_depth"], rec.Raw)
	}
	norec := relRelations(t, srv, alice, room, []string{root}, url.Values{"recurse": {"false"}}).expect(t, http.StatusOK, "")
	if _, ok := norec.Body["recursion_depth"]; !ok {
		t.Errorf("recurse=false: recursion_depth is mandatory when recurse is given: %s", norec.Raw)
	}
	recAnn := relRelations(t, srv, alice, room, []string{root, "m.annotation"}, url.Values{"recurse": {"true"}}).expect(t, http.StatusOK, "")
	wantIDs(t, "recursive m.annotation relations", rmIDs(rmEvents(t, recAnn, "chunk")), []string{grand, react2, react1})

	// The children carry their own aggregations and the viewer's membership.
	if m := rmField(rmEvents(t, all, "chunk")[2], "unsigned", "membership"); m != "join" {
		t.Errorf("unsigned.membership of a child = %v, want join", m)
	}

	// Refusals: a missing event, a room the user is not in, an unknown
	// room are all 404; bad parameters 400.
	relRelations(t, srv, alice, room, []string{"$nope"}, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	relRelations(t, srv, carol, room, []string{root}, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	relRelations(t, srv, alice, "!unknown:localhost", []string{root}, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	relRelations(t, srv, alice, room, []string{root}, url.Values{"dir": {"x"}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	relRelations(t, srv, alice, room, []string{root}, url.Values{"from": {"garbage"}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	relRelations(t, srv, alice, room, []string{root}, url.Values{"recurse": {"yes"}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
}

// TestRelationsHistoryVisibility checks that /relations shows only the
// children the user may see: a user who left a "joined" room does not see
// what came after.
func TestRelationsHistoryVisibility(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	dave := rmUser(t, srv, "dave")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	rmPutState(t, srv, alice, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"}).expect(t, http.StatusOK, "")
	early := rmSend(t, srv, alice, room, "before dave")
	relReact(t, srv, alice, room, early, "a").expect(t, http.StatusOK, "")
	rmJoin(t, srv, dave, room).expect(t, http.StatusOK, "")
	root := rmSend(t, srv, alice, room, "root")
	seen := relReact(t, srv, alice, room, root, "b").expect(t, http.StatusOK, "").str("event_id")
	rmOp(t, srv, dave, room, "leave", nil).expect(t, http.StatusOK, "")
	relReact(t, srv, alice, room, root, "c").expect(t, http.StatusOK, "")

	r := relRelations(t, srv, dave, room, []string{root}, nil).expect(t, http.StatusOK, "")
	wantIDs(t, "relations dave may see", rmIDs(rmEvents(t, r, "chunk")), []string{seen})
	// The parent from before his join is hidden: 404, as if missing.
	relRelations(t, srv, dave, room, []string{early}, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
}

// TestAggregations checks unsigned.m.relations: the latest valid edit, the
// thread summary, references; and that redactions take relations away.
func TestAggregations(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	carol := rmUser(t, srv, "carol")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	rmJoin(t, srv, bob, room).expect(t, http.StatusOK, "")
	rmJoin(t, srv, carol, room).expect(t, http.StatusOK, "")

	root := rmSend(t, srv, alice, room, "original")
	edit1 := relEdit(t, srv, alice, room, "m.room.message", root, "first edit")
	edit2 := relEdit(t, srv, alice, room, "m.room.message", root, "second edit")
	// Invalid edits: another sender, another type, no m.new_content.
	relEdit(t, srv, bob, room, "m.room.message", root, "bob's edit")
	relEdit(t, srv, alice, room, "m.sticker", root, "sticker edit")
	relSend(t, srv, alice, room, "m.room.message", map[string]any{"body": "* bare", "m.relates_to": relTo("m.replace", root)})
	ref := relSend(t, srv, bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "ref", "m.relates_to": relTo("m.reference", root)})
	t1 := relThreadReply(t, srv, bob, room, root, "one")
	t2 := relThreadReply(t, srv, bob, room, root, "two")
	// The thread's latest event carries its own edit.
	t2edit := relEdit(t, srv, bob, room, "m.room.message", t2, "two, edited")

	check := func(who session, ev map[string]any, wantEdit string, wantCount int, wantLatest string, participated bool) {
		t.Helper()
		if body := rmField(ev, "content", "body"); body != "original" {
			t.Errorf("content.body = %v: the server must not replace content", body)
		}
		rels, _ := rmField(ev, "unsigned", "m.relations").(map[string]any)
		if got := rmField(rels, "m.replace", "event_id"); got != wantEdit {
			t.Errorf("m.replace.event_id = %v, want %s", got, wantEdit)
		}
		if wantEdit != "" && rmField(rels, "m.replace", "content", "m.new_content", "body") == nil {
			t.Errorf("m.replace is not the whole edit event: %v", rels["m.replace"])
		}
		if got, _ := rmField(rels, "m.thread", "count").(float64); int(got) != wantCount {
			t.Errorf("m.thread.count = %v, want %d", got, wantCount)
		}
		if got := rmField(rels, "m.thread", "latest_event", "event_id"); got != wantLatest {
			t.Errorf("m.thread.latest_event.event_id = %v, want %s", got, wantLatest)
		}
		if got := rmField(rels, "m.thread", "current_user_participated"); got != participated {
			t.Errorf("m.thread.current_user_participated for %s = %v, want %v", who.UserID, got, participated)
		}
		refs, _ := rmField(rels, "m.reference", "chunk").([]any)
		if len(refs) != 1 || rmField(refs[0], "event_id") != ref {
			t.Errorf("m.reference.chunk = %v, want [{event_id: %s}]", refs, ref)
		}
	}

	ev := relEvent(t, srv, alice, room, root)
	check(alice, ev, edit2, 2, t2, true) // alice sent the root
	if got := rmField(ev, "unsigned", "m.relations", "m.thread", "latest_event", "unsigned", "m.relations", "m.replace", "event_id"); got != t2edit {
		t.Errorf("latest_event's own m.replace = %v, want %s", got, t2edit)
	}
	check(bob, relEvent(t, srv, bob, room, root), edit2, 2, t2, true)
	check(carol, relEvent(t, srv, carol, room, root), edit2, 2, t2, false)

	// The same bundle on /messages, /context and /sync.
	for _, e := range rmEvents(t, rmMessages(t, srv, carol, room, url.Values{"dir": {"b"}, "limit": {"50"}}).expect(t, http.StatusOK, ""), "chunk") {
		if e["event_id"] == root {
			check(carol, e, edit2, 2, t2, false)
		}
	}
	cx := get(t, srv, rmRoom(room, "context", root)+"?limit=4", carol.AccessToken).expect(t, http.StatusOK, "")
	check(carol, cx.Body["event"].(map[string]any), edit2, 2, t2, false)
	sy := syncGet(t, srv, carol, url.Values{"filter": {`{"room":{"timeline":{"limit":50}}}`}}).expect(t, http.StatusOK, "")
	found := false
	for _, e := range rmEventsOf(t, rmField(sy.Body, "rooms", "join", room, "timeline", "events")) {
		if e["event_id"] == root {
			found = true
			check(carol, e, edit2, 2, t2, false)
		}
	}
	if !found {
		t.Errorf("root not in carol's sync timeline")
	}

	// Redacting the latest edit brings back the one before; redacting a
	// thread event takes it from the count.
	rmSendRedact(t, srv, alice, room, edit2)
	rmSendRedact(t, srv, bob, room, t2)
	check(carol, relEvent(t, srv, carol, room, root), edit1, 1, t1, false)

	// A redacted original bundles no edit.
	rmSendRedact(t, srv, alice, room, root)
	if rels := rmField(relEvent(t, srv, carol, room, root), "unsigned", "m.relations"); rels != nil {
		t.Errorf("redacted event has m.relations %v", rels)
	}
}

// rmEventsOf reads a JSON list of events.
func rmEventsOf(t testing.TB, v any) []map[string]any {
	t.Helper()
	list, _ := v.([]any)
	out := make([]map[string]any, 0, len(list))
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// rmSendRedact redacts an event.
func rmSendRedact(t testing.TB, srv *testserver.Server, s session, roomID, eventID string) {
	t.Helper()
	put(t, srv, rmRoom(roomID, "redact", eventID, rmTxn()), s.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
}

// TestUnsignedMembership checks MSC4115's unsigned.membership: the
// requesting user's membership at each event.
func TestUnsignedMembership(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	before := rmSend(t, srv, alice, room, "before bob") // shared history: bob sees it
	rmJoin(t, srv, bob, room).expect(t, http.StatusOK, "")
	during := rmSend(t, srv, alice, room, "with bob")

	want := map[string]string{before: "leave", during: "join"}
	r := rmMessages(t, srv, bob, room, url.Values{"dir": {"b"}, "limit": {"50"}}).expect(t, http.StatusOK, "")
	seenJoin := false
	for _, e := range rmEvents(t, r, "chunk") {
		m := rmField(e, "unsigned", "membership")
		id, _ := e["event_id"].(string)
		if w, ok := want[id]; ok && m != w {
			t.Errorf("bob's unsigned.membership at %s = %v, want %s", id, m, w)
		}
		if e["type"] == "m.room.member" && e["state_key"] == bob.UserID {
			seenJoin = true
			if m != "join" {
				t.Errorf("unsigned.membership at bob's own join = %v, want join", m)
			}
		}
		if e["type"] == "m.room.member" && e["state_key"] == alice.UserID && m != "leave" {
			// Alice's join came before bob's: he had none then.
			t.Errorf("bob's unsigned.membership at alice's join = %v, want leave", m)
		}
	}
	if !seenJoin {
		t.Fatalf("bob's join not in /messages: %s", r.Raw)
	}
	if m := rmField(relEvent(t, srv, alice, room, before), "unsigned", "membership"); m != "join" {
		t.Errorf("alice's unsigned.membership = %v, want join", m)
	}
}

// TestRelationChecks checks the relations a server refuses to send:
// duplicate annotations and threads off events that have a relation.
func TestRelationChecks(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	rmJoin(t, srv, bob, room).expect(t, http.StatusOK, "")
	root := rmSend(t, srv, alice, room, "root")

	first := relReact(t, srv, alice, room, root, "👍").expect(t, http.StatusOK, "").str("event_id")
	relReact(t, srv, alice, room, root, "👍").expect(t, http.StatusBadRequest, "M_DUPLICATE_ANNOTATION")
	relReact(t, srv, alice, room, root, "👎").expect(t, http.StatusOK, "")
	relReact(t, srv, bob, room, root, "👍").expect(t, http.StatusOK, "")
	// Once the first is redacted, the annotation may be sent again.
	rmSendRedact(t, srv, alice, room, first)
	relReact(t, srv, alice, room, root, "👍").expect(t, http.StatusOK, "")

	// The same annotation sent at once, so that the copies may share a
	// commit batch: exactly one is accepted.
	var wg sync.WaitGroup
	statuses := make([]int, 6)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel := relTo("m.annotation", root)
			rel["key"] = "🔥"
			r, err := tryDo(srv, req{Method: http.MethodPut, Path: rmRoom(room, "send", "m.reaction", rmTxn()),
				Token: bob.AccessToken, Body: map[string]any{"m.relates_to": rel}})
			if err == nil {
				statuses[i] = r.Status
			}
		}()
	}
	wg.Wait()
	if ok := slices.Index(statuses, http.StatusOK); ok < 0 || slices.Index(statuses[ok+1:], http.StatusOK) >= 0 ||
		len(slices.DeleteFunc(slices.Clone(statuses), func(s int) bool { return s == http.StatusOK || s == http.StatusBadRequest })) > 0 {
		t.Errorf("concurrent identical annotations: statuses %v, want one 200 and the rest 400", statuses)
	}

	reply := relThreadReply(t, srv, bob, room, root, "in thread")
	nested := map[string]any{"msgtype": "m.text", "body": "nested", "m.relates_to": relTo("m.thread", reply)}
	rmSendRaw(t, srv, alice, room, "m.room.message", rmTxn(), nested).expect(t, http.StatusBadRequest, "M_UNKNOWN")
	edit := relEdit(t, srv, alice, room, "m.room.message", root, "edited")
	offEdit := map[string]any{"msgtype": "m.text", "body": "off an edit", "m.relates_to": relTo("m.thread", edit)}
	rmSendRaw(t, srv, alice, room, "m.room.message", rmTxn(), offEdit).expect(t, http.StatusBadRequest, "M_UNKNOWN")
	// A reply (m.in_reply_to, no rel_type) may still start a thread.
	rich := relSend(t, srv, bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "reply",
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": root}}})
	relThreadReply(t, srv, alice, room, rich, "thread off a reply")
}

// TestThreads checks /threads: roots ordered by their latest activity,
// include=participated, pagination and refusals.
func TestThreads(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	carol := rmUser(t, srv, "carol")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	rmJoin(t, srv, bob, room).expect(t, http.StatusOK, "")

	rootA := rmSend(t, srv, alice, room, "A")
	rootB := rmSend(t, srv, bob, room, "B")
	rootC := rmSend(t, srv, bob, room, "C")
	rmSend(t, srv, alice, room, "no thread")
	relThreadReply(t, srv, bob, room, rootA, "a1")
	relThreadReply(t, srv, bob, room, rootB, "b1")
	relThreadReply(t, srv, bob, room, rootC, "c1")
	relThreadReply(t, srv, bob, room, rootA, "a2") // A is now the most recent

	threads := func(s session, q url.Values) resp {
		t.Helper()
		p := v1 + "/rooms/" + url.PathEscape(room) + "/threads"
		if len(q) > 0 {
			p += "?" + q.Encode()
		}
		return get(t, srv, p, s.AccessToken)
	}
	all := threads(alice, nil).expect(t, http.StatusOK, "")
	wantIDs(t, "threads", rmIDs(rmEvents(t, all, "chunk")), []string{rootA, rootC, rootB})
	if c, _ := rmField(rmEvents(t, all, "chunk")[0], "unsigned", "m.relations", "m.thread", "count").(float64); c != 2 {
		t.Errorf("thread A's bundled count = %v, want 2: %s", c, all.Raw)
	}
	part := threads(alice, url.Values{"include": {"participated"}}).expect(t, http.StatusOK, "")
	wantIDs(t, "threads alice took part in", rmIDs(rmEvents(t, part, "chunk")), []string{rootA})
	wantIDs(t, "threads bob took part in", rmIDs(rmEvents(t, threads(bob, url.Values{"include": {"participated"}}).expect(t, http.StatusOK, ""), "chunk")),
		[]string{rootA, rootC, rootB})

	var paged []string
	q := url.Values{"limit": {"1"}}
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatal("/threads pagination never ends")
		}
		r := threads(alice, q).expect(t, http.StatusOK, "")
		paged = append(paged, rmIDs(rmEvents(t, r, "chunk"))...)
		if r.str("next_batch") == "" {
			break
		}
		q.Set("from", r.str("next_batch"))
	}
	wantIDs(t, "paged threads", paged, []string{rootA, rootC, rootB})

	threads(carol, nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	threads(alice, url.Values{"include": {"mine"}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	threads(alice, url.Values{"from": {"nonsense"}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
}
