package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The few Client-Server API endpoints the scenarios use.

const clientV3 = "/_matrix/client/v3"

// roomPath is /_matrix/client/v3/rooms/{roomId}/{rest...}, each segment
// escaped: room IDs contain '!' and ':', txn IDs could contain anything.
func roomPath(roomID string, rest ...string) string {
	p := clientV3 + "/rooms/" + url.PathEscape(roomID)
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

// createRoom: POST /createRoom; returns the new room's ID.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3createroom
func createRoom(ctx context.Context, c *client, token string, req map[string]any) (string, error) {
	var resp struct {
		RoomID string `json:"room_id"`
	}
	if err := c.do(ctx, http.MethodPost, clientV3+"/createRoom", nil, token, req, &resp); err != nil {
		return "", err
	}
	if resp.RoomID == "" {
		return "", errors.New("POST /createRoom: response has no room_id")
	}
	return resp.RoomID, nil
}

// joinRoom: POST /join/{roomIdOrAlias}.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3joinroomidoralias
func joinRoom(ctx context.Context, c *client, token, roomID string) error {
	return c.do(ctx, http.MethodPost, clientV3+"/join/"+url.PathEscape(roomID), nil, token, map[string]any{}, nil)
}

// sendText: PUT /rooms/{roomId}/send/m.room.message/{txnId} with an m.text
// body; returns the event ID.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid
func sendText(ctx context.Context, c *client, token, roomID, txnID, body string) (string, error) {
	var resp struct {
		EventID string `json:"event_id"`
	}
	content := map[string]string{"msgtype": "m.text", "body": body}
	err := c.do(ctx, http.MethodPut, roomPath(roomID, "send", "m.room.message", txnID), nil, token, content, &resp)
	if err != nil {
		return "", err
	}
	if resp.EventID == "" {
		return "", errors.New("PUT /send: response has no event_id")
	}
	return resp.EventID, nil
}

// event is the part of a room event the scenarios look at.
type event struct {
	EventID string `json:"event_id"`
	Type    string `json:"type"`
	Content struct {
		Body string `json:"body"` // of a message: send -verify finds its sends by it
	} `json:"content"`
}

type messagesPage struct {
	Start string  `json:"start"`
	End   string  `json:"end"`
	Chunk []event `json:"chunk"`
}

// roomMessages: GET /rooms/{roomId}/messages?dir=b, from the most recent
// event when from is empty.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidmessages
func roomMessages(ctx context.Context, c *client, token, roomID, from string, limit int) (messagesPage, error) {
	q := url.Values{"dir": {"b"}, "limit": {strconv.Itoa(limit)}}
	if from != "" {
		q.Set("from", from)
	}
	var page messagesPage
	err := c.do(ctx, http.MethodGet, roomPath(roomID, "messages"), q, token, nil, &page)
	return page, err
}

// pageBackwards pages through a room from the most recent event back to its
// start, calling each for every event, and returns the number of pages and
// the latency of each. It makes at most maxPages requests.
func pageBackwards(ctx context.Context, c *client, token, roomID string, limit, maxPages int,
	each func(event)) (pages int, lat []time.Duration, err error) {
	from := ""
	for pages < maxPages {
		t0 := time.Now()
		page, err := roomMessages(ctx, c, token, roomID, from, limit)
		if err != nil {
			return pages, lat, fmt.Errorf("page %d: %w", pages+1, err)
		}
		lat = append(lat, time.Since(t0))
		pages++
		for _, ev := range page.Chunk {
			each(ev)
		}
		// The spec omits end when nothing further back can be returned; that
		// is the only sure sign of the start (a short page is not: a server
		// may filter events out of a page). An empty chunk or an end equal
		// to from would make the next request ask the same thing again.
		if page.End == "" || len(page.Chunk) == 0 || page.End == from {
			return pages, lat, nil
		}
		from = page.End
	}
	return pages, lat, fmt.Errorf("still not at the start of room %s after %d pages", roomID, maxPages)
}
