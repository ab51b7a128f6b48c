package clientapi_test

import (
	"fmt"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
)

// TestAdminEventReports: a report's details carry the event and its room;
// deleting it takes it off the list.
func TestAdminEventReports(t *testing.T) {
	srv, root, alice, bob := adminWithUsers(t)
	tok := root.AccessToken
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Reported"})
	must(t, err, "create room")
	_, err = bob.JoinRoom(ctx, string(room.RoomID), nil)
	must(t, err, "bob joins")
	sent, err := alice.SendText(ctx, room.RoomID, "spam spam spam")
	must(t, err, "send")
	post(t, srv, v3+"/rooms/"+string(room.RoomID)+"/report/"+string(sent.EventID), bob.AccessToken, map[string]any{"reason": "spam"}).
		expect(t, http.StatusOK, "")

	list := get(t, srv, adminV1+"/event_reports", tok).expect(t, http.StatusOK, "")
	reports := list.Body["event_reports"].([]any)
	if len(reports) != 1 {
		t.Fatalf("reports: %s", list.Raw)
	}
	id := fmt.Sprint(reports[0].(map[string]any)["id"])
	r := get(t, srv, adminV1+"/event_reports/"+id, tok).expect(t, http.StatusOK, "")
	ej, _ := r.Body["event_json"].(map[string]any)
	if r.str("event_id") != string(sent.EventID) || r.str("user_id") != string(bob.UserID) || r.str("sender") != string(alice.UserID) ||
		r.str("reason") != "spam" || r.str("name") != "Reported" || ej == nil || ej["content"].(map[string]any)["body"] != "spam spam spam" {
		t.Fatalf("report details: %s", r.Raw)
	}
	get(t, srv, adminV1+"/event_reports/"+id, bob.AccessToken).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	del(t, srv, adminV1+"/event_reports/"+id, bob.AccessToken, nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	get(t, srv, adminV1+"/event_reports/abc", tok).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	del(t, srv, adminV1+"/event_reports/"+id, tok, nil).expect(t, http.StatusOK, "")
	get(t, srv, adminV1+"/event_reports/"+id, tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	del(t, srv, adminV1+"/event_reports/"+id, tok, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	if list := get(t, srv, adminV1+"/event_reports", tok).expect(t, http.StatusOK, ""); list.Body["total"] != float64(0) {
		t.Fatalf("after delete: %s", list.Raw)
	}

	// The room is the largest in the database.
	r = get(t, srv, adminV1+"/statistics/database/rooms", tok).expect(t, http.StatusOK, "")
	rooms := r.Body["rooms"].([]any)
	if len(rooms) != 1 || rooms[0].(map[string]any)["room_id"] != string(room.RoomID) || rooms[0].(map[string]any)["estimated_size"].(float64) < 1000 {
		t.Fatalf("room sizes: %s", r.Raw)
	}
	get(t, srv, adminV1+"/statistics/database/rooms", bob.AccessToken).expect(t, http.StatusForbidden, "M_FORBIDDEN")
}
