package clientapi_test

// Pagination tokens: every token /sync hands out is a pagination token
// too. matrix-js-sdk (Element Web) loads members lazily with
// /members?at=<its latest next_batch>; the spec lets /messages start from
// a next_batch.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidmembers

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

func TestPaginationAcceptsSyncTokens(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice, bob := rmUser(t, srv, "alice"), rmUser(t, srv, "bob")
	roomID := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	before := []string{rmSend(t, srv, alice, roomID, "one"), rmSend(t, srv, alice, roomID, "two"), rmSend(t, srv, alice, roomID, "three")}
	syncTok := psSync(t, srv, alice, "", 0).str("next_batch")
	if syncTok == "" {
		t.Fatal("no next_batch")
	}
	// After the token: bob joins, alice renames herself, two messages.
	rmJoin(t, srv, bob, roomID).expect(t, http.StatusOK, "")
	rmPutState(t, srv, alice, roomID, "m.room.member", alice.UserID, map[string]any{"membership": "join", "displayname": "Alice Later"}).
		expect(t, http.StatusOK, "")
	after := []string{rmSend(t, srv, bob, roomID, "four"), rmSend(t, srv, alice, roomID, "five")}

	t.Run("members at a sync token are the members then", func(t *testing.T) {
		r := get(t, srv, rmRoom(roomID, "members")+"?"+url.Values{"at": {syncTok}}.Encode(), alice.AccessToken).
			expect(t, http.StatusOK, "")
		evs := rmEvents(t, r, "chunk")
		if len(evs) != 1 || evs[0]["state_key"] != alice.UserID {
			t.Fatalf("members at %s = %s, want alice alone (bob joined after)", syncTok, r.Raw)
		}
		if name := rmField(evs[0], "content", "displayname"); name == "Alice Later" {
			t.Fatalf("alice's member event at the token is her later one: %s", r.Raw)
		}
		// With membership filters, as matrix-js-sdk asks.
		r = get(t, srv, rmRoom(roomID, "members")+"?"+url.Values{"at": {syncTok}, "not_membership": {"leave"}}.Encode(), bob.AccessToken).
			expect(t, http.StatusOK, "")
		if n := len(rmEvents(t, r, "chunk")); n != 1 {
			t.Fatalf("bob asking: %d members at the token, want 1: %s", n, r.Raw)
		}
		// Now: both.
		r = get(t, srv, rmRoom(roomID, "members"), alice.AccessToken).expect(t, http.StatusOK, "")
		if n := len(rmEvents(t, r, "chunk")); n != 2 {
			t.Fatalf("%d members now, want 2: %s", n, r.Raw)
		}
		// The newest next_batch: the current members.
		now := psSync(t, srv, alice, "", 0).str("next_batch")
		r = get(t, srv, rmRoom(roomID, "members")+"?"+url.Values{"at": {now}}.Encode(), alice.AccessToken).expect(t, http.StatusOK, "")
		if n := len(rmEvents(t, r, "chunk")); n != 2 {
			t.Fatalf("%d members at the latest token, want 2: %s", n, r.Raw)
		}
	})

	t.Run("messages backwards from a sync token", func(t *testing.T) {
		r := rmMessages(t, srv, alice, roomID, url.Values{"dir": {"b"}, "from": {syncTok}, "limit": {"2"}}).expect(t, http.StatusOK, "")
		got := rmIDs(rmEvents(t, r, "chunk"))
		if want := []string{before[2], before[1]}; !slices.Equal(got, want) {
			t.Fatalf("dir=b from the sync token = %v, want %v", got, want)
		}
		if r.str("start") != syncTok {
			t.Fatalf("start = %q, want the from token %q", r.str("start"), syncTok)
		}
		end := r.str("end")
		if end == "" {
			t.Fatalf("no end though the room has older events: %s", r.Raw)
		}
		r = rmMessages(t, srv, alice, roomID, url.Values{"dir": {"b"}, "from": {end}, "limit": {"1"}}).expect(t, http.StatusOK, "")
		if got := rmIDs(rmEvents(t, r, "chunk")); !slices.Equal(got, []string{before[0]}) {
			t.Fatalf("the next page = %v, want [%s]", got, before[0])
		}
	})

	t.Run("messages forwards from a sync token", func(t *testing.T) {
		r := rmMessages(t, srv, alice, roomID, url.Values{"dir": {"f"}, "from": {syncTok}, "limit": {"10"}}).expect(t, http.StatusOK, "")
		got := rmIDs(rmEvents(t, r, "chunk"))
		if len(got) != 4 || !slices.Equal(got[2:], after) {
			t.Fatalf("dir=f from the sync token = %v, want bob's join, alice's rename, %v", got, after)
		}
	})

	t.Run("messages back to a sync token", func(t *testing.T) {
		r := rmMessages(t, srv, alice, roomID, url.Values{"dir": {"b"}, "to": {syncTok}, "limit": {"10"}}).expect(t, http.StatusOK, "")
		got := rmIDs(rmEvents(t, r, "chunk"))
		if len(got) != 4 || got[0] != after[1] || got[1] != after[0] {
			t.Fatalf("dir=b to the sync token = %v, want the 4 events after it", got)
		}
	})

	t.Run("malformed tokens", func(t *testing.T) {
		for _, tok := range []string{"x", "s", "sabc", "s1_x", "s-1", "t1", "tx_1"} {
			rmMessages(t, srv, alice, roomID, url.Values{"dir": {"b"}, "from": {tok}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
			rmMessages(t, srv, alice, roomID, url.Values{"dir": {"b"}, "to": {tok}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
			get(t, srv, rmRoom(roomID, "members")+"?"+url.Values{"at": {tok}}.Encode(), alice.AccessToken).
				expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		}
	})
}
