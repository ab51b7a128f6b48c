package roomserver

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Pagination tokens.
//
// Every endpoint that takes a pagination token (/messages from and to,
// /members at, /relations from and to) must take every token the server
// hands out for a room's timeline: the topological tokens of /messages,
// /context and a sync timeline's prev_batch, and /sync's next_batch too,
// which matrix-js-sdk (Element Web) passes as /members?at= when it loads
// members lazily, and which the spec allows as /messages's from.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidmessages
//
// Use it in two steps: ParseToken reads the text, then Service.Place turns
// it into a position in the room, before any comparison with the room's
// events:
//
//	tok, err := roomserver.ParseToken(q.Get("from")) // 400 M_INVALID_PARAM if malformed
//	pos, err := s.Place(ctx, roomID, tok)            // (depth, stream) in roomID
//	// events after pos: depth > pos.Depth OR (depth = pos.Depth AND stream_pos > pos.Stream)

// Token is a position in a room's topological order, between events: the
// position just after the event at (Depth, Stream). Its text form is
// "t<depth>_<stream>".
//
// A token read from a sync token is a stream position only (Live is set
// and Depth is meaningless): Service.Place turns it into a room position.
type Token struct {
	Depth, Stream int64
	// Live marks a sync token's position in the events stream: the point
	// of the room's timeline a /sync response reached.
	Live bool
}

// String is the token's text form: "t<depth>_<stream>", or for a Live
// token not yet placed "s<stream>", which ParseToken reads back as the
// same stream position (a topological form would claim a depth it does
// not have).
func (t Token) String() string {
	if t.Live {
		return fmt.Sprintf("s%d", t.Stream)
	}
	return fmt.Sprintf("t%d_%d", t.Depth, t.Stream)
}

// ParseToken reads a pagination token: a topological token
// "t<depth>_<stream>", or a sync token "s<events>_<...>" as /sync's
// next_batch (only its events position matters to a room's timeline), also
// as the end of a sliding sync pos "<n>/s<events>_<...>".
// Anything else is 400 M_INVALID_PARAM.
func ParseToken(s string) (Token, error) {
	bad := mxerr.InvalidParam("Invalid pagination token %q", s)
	// A sliding sync pos is "<connection position>/<sync token>"; MSC4186
	// lets clients page from it like from a sync token.
	if conn, tok, ok := strings.Cut(s, "/"); ok {
		if _, err := strconv.ParseUint(conn, 10, 63); err != nil || !strings.HasPrefix(tok, "s") {
			return Token{}, bad
		}
		s = tok
	}
	if rest, ok := strings.CutPrefix(s, "s"); ok {
		// The events stream comes first in a sync token (syncapi's
		// streamNames); the others are positions of other streams, but
		// must still be numbers for the token to be one of ours.
		parts := strings.Split(rest, "_")
		var events int64
		for i, p := range parts {
			v, err := strconv.ParseInt(p, 10, 64)
			if err != nil || v < 0 {
				return Token{}, bad
			}
			if i == 0 {
				events = v
			}
		}
		return Token{Stream: events, Live: true}, nil
	}
	rest, ok := strings.CutPrefix(s, "t")
	d, st, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 {
		return Token{}, bad
	}
	depth, err1 := strconv.ParseInt(d, 10, 64)
	stream, err2 := strconv.ParseInt(st, 10, 64)
	if err1 != nil || err2 != nil {
		return Token{}, bad
	}
	return Token{Depth: depth, Stream: stream}, nil
}

// Place returns tok as a position in the room's topological order. A
// topological token is that already. A sync token's events position
// becomes the position just after the room's last event at or before it
// in the stream, the event the client's timeline ended with; before the
// room's first event, the start of the room (t0_0).
func (s *Service) Place(ctx context.Context, roomID string, tok Token) (Token, error) {
	if !tok.Live {
		return tok, nil
	}
	var out Token
	err := s.db.QueryRowContext(ctx, `SELECT depth, stream_pos FROM events WHERE room_id = $1 AND stream_pos > 0 AND stream_pos <= $2
		ORDER BY stream_pos DESC LIMIT 1`, roomID, tok.Stream).Scan(&out.Depth, &out.Stream)
	if err != nil && !isNoRows(err) {
		return Token{}, fmt.Errorf("place sync token in %s: %w", roomID, err)
	}
	return out, nil
}

// placeOptional is Place for an optional token.
func (s *Service) placeOptional(ctx context.Context, roomID string, tok *Token) (*Token, error) {
	if tok == nil {
		return nil, nil
	}
	t, err := s.Place(ctx, roomID, *tok)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// before is the position just before ev; after, just after it.
func before(ev *Event) Token { return Token{Depth: ev.Depth(), Stream: ev.StreamPos - 1} }
func after(ev *Event) Token  { return Token{Depth: ev.Depth(), Stream: ev.StreamPos} }
