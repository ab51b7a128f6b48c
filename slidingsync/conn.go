package slidingsync

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/syncapi"
)

// Connections.
//
// A response at position P records what it sent as pending at P; the
// client's next request, naming P, makes that the connection's state
// (base). A retry naming the position before P (the response was lost)
// ignores P's records and sends the same again. Both happen in the
// transaction that records the next response, so a request that fails or
// waits changes nothing.

const (
	// connLifetime: a connection unused this long is dropped; its pos is
	// then unknown and the client starts again.
	connLifetime = 7 * 24 * time.Hour
	// maxConnsPerDevice bounds what one device keeps stored (MSC4186's
	// security considerations); the least recently used goes first.
	maxConnsPerDevice = 100
	// maxLazyRemembered bounds the lazy members remembered per room; past
	// it the list starts again (members may then be sent twice).
	maxLazyRemembered = 200
)

// connState is what a connection keeps beyond its rooms.
type connState struct {
	// Subs are the sticky room subscriptions.
	Subs map[string]*RoomConfig `json:"subs,omitempty"`
	// Counts are the list counts last sent.
	Counts map[string]int `json:"counts,omitempty"`
}

// roomState is what a connection has sent of a room.
type roomState struct {
	// Pos is the events stream position the room's timeline was sent up
	// to.
	Pos int64 `json:"p"`
	// Membership and MemberPos: the user's membership when last sent, and
	// the position of its event.
	Membership string `json:"m"`
	MemberPos  int64  `json:"mp"`
	// Rules is the room config it was sent with.
	Rules roomRules `json:"r"`
	// The fields last sent.
	Name      *string `json:"n,omitempty"`
	Avatar    *string `json:"a,omitempty"`
	Heroes    string  `json:"h,omitempty"`
	IsDM      bool    `json:"dm,omitempty"`
	Joined    int     `json:"jc,omitempty"`
	Invited   int     `json:"ic,omitempty"`
	Notif     int     `json:"nc,omitempty"`
	Highlight int     `json:"hc,omitempty"`
	Bump      int64   `json:"b,omitempty"`
	// Lazy are the members whose member events went out through lazy
	// loading.
	Lazy []string `json:"lazy,omitempty"`
}

// conn is a connection as one request sees it.
type conn struct {
	key                      int64
	userID, deviceID, connID string
	// reset: the request starts the connection (again).
	reset bool
	// at is the position the request named (0 for none); since the sync
	// token there (nil for none).
	at    int64
	since *syncapi.Token
	state connState
	// nextPos is the last position handed out.
	nextPos int64
	// known is what the connection had sent of the rooms read so far (nil:
	// never sent), as of at.
	known map[string]*roomState
}

// connLocks serialises the requests of one connection in this process.
type connLocks struct {
	mu    sync.Mutex
	locks map[string]*connLock
}

type connLock struct {
	mu   sync.Mutex
	refs int
}

func (l *connLocks) lock(key string) func() {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*connLock{}
	}
	cl := l.locks[key]
	if cl == nil {
		cl = &connLock{}
		l.locks[key] = cl
	}
	cl.refs++
	l.mu.Unlock()
	cl.mu.Lock()
	return func() {
		cl.mu.Unlock()
		l.mu.Lock()
		if cl.refs--; cl.refs == 0 {
			delete(l.locks, key)
		}
		l.mu.Unlock()
	}
}

func unknownPos() error {
	return &mxerr.Error{Status: 400, Code: "M_UNKNOWN_POS", Message: "Unknown or expired pos: start the connection again"}
}

// parsePos reads the connection position of a pos: "<n>/<sync token>".
func parsePos(s string) (int64, bool) {
	n, _, ok := strings.Cut(s, "/")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(n, 10, 64)
	return v, err == nil && v > 0
}

// openConn finds the connection a request continues, or the one it
// starts. It reads only: the request's writes come with its response.
func (s *Service) openConn(ctx context.Context, req *Request) (*conn, error) {
	c := &conn{userID: req.UserID, deviceID: req.DeviceID, connID: req.ConnID}
	// The record of the connection's last answer may still be on its way
	// to the database.
	if err := s.inflight.wait(ctx, connIdentity(req.UserID, req.DeviceID, req.ConnID)); err != nil {
		return nil, err
	}
	var (
		ackedPos       int64
		ackedToken, st string
		lastUsed       int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT conn_key, acked_pos, acked_token, state, next_pos, last_used_ts
		FROM sliding_sync_connections WHERE user_id = $1 AND device_id = $2 AND conn_id = $3`,
		req.UserID, req.DeviceID, req.ConnID).Scan(&c.key, &ackedPos, &ackedToken, &st, &c.nextPos, &lastUsed)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if req.Pos != "" {
			return nil, unknownPos()
		}
		c.reset = true
		return c, nil
	case err != nil:
		return nil, fmt.Errorf("sliding sync connection: %w", err)
	}
	if req.Pos == "" {
		c.reset = true
		return c, nil
	}
	at, ok := parsePos(req.Pos)
	if !ok || time.Since(time.UnixMilli(lastUsed)) > connLifetime {
		return nil, unknownPos()
	}
	c.at = at
	token, state := ackedToken, st
	if at != ackedPos || ackedPos == 0 {
		// A position handed out since: the client got that response.
		err := s.db.QueryRowContext(ctx, `SELECT token, state FROM sliding_sync_positions WHERE conn_key = $1 AND pos = $2`,
			c.key, at).Scan(&token, &state)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, unknownPos()
		}
		if err != nil {
			return nil, fmt.Errorf("sliding sync position: %w", err)
		}
	}
	tok, err := syncapi.ParseToken(token)
	if err != nil {
		return nil, unknownPos()
	}
	c.since = &tok
	if err := json.Unmarshal([]byte(state), &c.state); err != nil {
		return nil, fmt.Errorf("sliding sync connection state: %w", err)
	}
	return c, nil
}

// roomStates reads what the connection has sent of the rooms, as of the
// request's position.
func (s *Service) roomStates(ctx context.Context, c *conn, roomIDs []string) (map[string]*roomState, error) {
	out := map[string]*roomState{}
	if c.reset || len(roomIDs) == 0 {
		return out, nil
	}
	// What the connection's last response left in memory, then the
	// database for the rest.
	if c.known == nil {
		c.known = map[string]*roomState{}
		for id, rs := range s.memo.get(c.key, c.at) {
			c.known[id] = rs
		}
	}
	var missing []string
	for _, id := range roomIDs {
		if rs, ok := c.known[id]; ok {
			if rs != nil {
				out[id] = rs
			}
		} else {
			missing = append(missing, id)
		}
	}
	roomIDs = missing
	defer func() {
		for _, id := range missing {
			c.known[id] = out[id]
		}
	}()
	for len(roomIDs) > 0 {
		n := min(len(roomIDs), 500)
		chunk := roomIDs[:n]
		roomIDs = roomIDs[n:]
		args := []any{c.key, c.at}
		marks := make([]string, len(chunk))
		for i, id := range chunk {
			args = append(args, id)
			marks[i] = "$" + strconv.Itoa(i+3)
		}
		in := strings.Join(marks, ",")
		// The base, then (ordered after it) what the response at the
		// request's position sent over it.
		q := `SELECT room_id, base, 0 FROM sliding_sync_rooms WHERE conn_key = $1 AND room_id IN (` + in + `)
			UNION ALL
			SELECT room_id, state, 1 FROM sliding_sync_room_pending WHERE conn_key = $1 AND pos = $2 AND room_id IN (` + in + `)
			ORDER BY 3`
		if err := s.readRoomStates(ctx, q, args, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Service) readRoomStates(ctx context.Context, q string, args []any, out map[string]*roomState) error {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("sliding sync rooms: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			roomID, raw string
			pending     int
		)
		if err := rows.Scan(&roomID, &raw, &pending); err != nil {
			return fmt.Errorf("sliding sync rooms: %w", err)
		}
		var rs roomState
		if err := json.Unmarshal([]byte(raw), &rs); err != nil {
			return fmt.Errorf("sliding sync room state: %w", err)
		}
		out[roomID] = &rs
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sliding sync rooms: %w", err)
	}
	return nil
}

// record is what one response writes: the connection's new position and
// what it sent of each room.
type record struct {
	token syncapi.Token
	state connState
	rooms map[string]*roomState
}

// save writes a response's record and returns its position. In the same
// transaction the request's own position becomes the connection's state.
func (s *Service) save(ctx context.Context, c *conn, rec *record) (int64, error) {
	stateJSON, err := json.Marshal(rec.state)
	if err != nil {
		return 0, err
	}
	roomJSON := make(map[string]string, len(rec.rooms))
	for id, rs := range rec.rooms {
		b, err := json.Marshal(rs)
		if err != nil {
			return 0, err
		}
		roomJSON[id] = string(b)
	}
	var pos int64
	write := func(ctx context.Context, tx *database.Tx) error {
		now := time.Now().UnixMilli()
		if c.reset {
			var err error
			if pos, err = s.resetConn(ctx, tx, c, now); err != nil {
				return err
			}
		} else {
			var ackedPos, nextPos int64
			if err := tx.QueryRowContext(ctx, `SELECT next_pos, acked_pos FROM sliding_sync_connections WHERE conn_key = $1`,
				c.key).Scan(&nextPos, &ackedPos); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
					return unknownPos() // dropped meanwhile
				}
				return fmt.Errorf("sliding sync connection: %w", err)
			}
			if ackedPos > c.at || nextPos >= pos {
				return unknownPos() // a later request moved the connection on
			}
			if c.at != ackedPos {
				if err := ackPos(ctx, tx, c); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE sliding_sync_connections SET next_pos = $1, last_used_ts = $2 WHERE conn_key = $3`,
				pos, now, c.key); err != nil {
				return fmt.Errorf("sliding sync connection: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sliding_sync_positions (conn_key, pos, token, state) VALUES ($1, $2, $3, $4)`,
			c.key, pos, rec.token.String(), string(stateJSON)); err != nil {
			return fmt.Errorf("sliding sync position: %w", err)
		}
		for id, js := range roomJSON {
			if _, err := tx.ExecContext(ctx, `INSERT INTO sliding_sync_room_pending (conn_key, pos, room_id, state) VALUES ($1, $2, $3, $4)`,
				c.key, pos, id, js); err != nil {
				return fmt.Errorf("sliding sync room: %w", err)
			}
		}
		return nil
	}
	if c.reset {
		// A connection's first answer: its row is made, and its key
		// known, in this transaction.
		err = s.writer.Do(ctx, func(tx *database.Tx) error { return write(ctx, tx) })
		return pos, err
	}
	// Then the answer goes out before its record commits: the record is
	// a cache of what the client was sent, and the client's next request,
	// which names this position, waits for it (openConn). Should the
	// server die first, that position is unknown and the client starts
	// the connection again, as MSC4186 provides.
	pos = c.nextPos + 1
	done := s.inflight.start(connIdentity(c.userID, c.deviceID, c.connID))
	// The request's context ends with the answer: the write has its own.
	wctx := context.WithoutCancel(ctx)
	s.writer.Later(func(tx *database.Tx) error { return write(wctx, tx) }, func(err error) {
		if err != nil && !isUnknownPos(err) {
			s.log.WithError(err).Warn("sliding sync: recording an answer")
		}
		done()
	})
	return pos, nil
}

func isUnknownPos(err error) bool {
	me, ok := mxerr.As(err)
	return ok && me.Code == "M_UNKNOWN_POS"
}

// connIdentity names a connection before its key is read.
func connIdentity(userID, deviceID, connID string) string {
	return userID + "\x00" + deviceID + "\x00" + connID
}

// inflight tracks, per connection, the record of its last answer while it
// is being written.
type inflight struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

// start registers a write and returns the function that ends it.
func (f *inflight) start(id string) func() {
	ch := make(chan struct{})
	f.mu.Lock()
	if f.m == nil {
		f.m = map[string]chan struct{}{}
	}
	f.m[id] = ch
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		if f.m[id] == ch {
			delete(f.m, id)
		}
		f.mu.Unlock()
		close(ch)
	}
}

// wait returns once the connection's last record is written.
func (f *inflight) wait(ctx context.Context, id string) error {
	f.mu.Lock()
	ch := f.m[id]
	f.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ackPos makes the request's position the connection's state: the rooms
// its response sent become base; what older positions sent (responses the
// client never processed) is dropped. Answers to the same request after
// this one (positions above it) keep theirs until a later position is
// acknowledged.
func ackPos(ctx context.Context, tx *database.Tx, c *conn) error {
	stmts := []struct {
		q    string
		args []any
	}{
		{`INSERT INTO sliding_sync_rooms (conn_key, room_id, base)
			SELECT conn_key, room_id, state FROM sliding_sync_room_pending WHERE conn_key = $1 AND pos = $2
			ON CONFLICT (conn_key, room_id) DO UPDATE SET base = excluded.base`, []any{c.key, c.at}},
		{`DELETE FROM sliding_sync_room_pending WHERE conn_key = $1 AND pos <= $2`, []any{c.key, c.at}},
		{`UPDATE sliding_sync_connections SET acked_pos = $1,
			acked_token = (SELECT token FROM sliding_sync_positions WHERE conn_key = $2 AND pos = $1),
			state = (SELECT state FROM sliding_sync_positions WHERE conn_key = $2 AND pos = $1)
			WHERE conn_key = $2`, []any{c.at, c.key}},
		{`DELETE FROM sliding_sync_positions WHERE conn_key = $1 AND pos <= $2`, []any{c.key, c.at}},
	}
	for _, st := range stmts {
		if _, err := tx.ExecContext(ctx, st.q, st.args...); err != nil {
			return fmt.Errorf("sliding sync acknowledgement: %w", err)
		}
	}
	return nil
}

// resetConn starts a connection (again): what it had sent is forgotten,
// its positions go on from where they were. It drops the device's least
// recently used connections beyond maxConnsPerDevice.
func (s *Service) resetConn(ctx context.Context, tx *database.Tx, c *conn, now int64) (int64, error) {
	var key, next int64
	err := tx.QueryRowContext(ctx, `SELECT conn_key, next_pos FROM sliding_sync_connections
		WHERE user_id = $1 AND device_id = $2 AND conn_id = $3`, c.userID, c.deviceID, c.connID).Scan(&key, &next)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if err := tx.QueryRowContext(ctx, `INSERT INTO sliding_sync_connections
			(user_id, device_id, conn_id, acked_pos, acked_token, state, next_pos, last_used_ts)
			VALUES ($1, $2, $3, 0, '', '{}', 1, $4) RETURNING conn_key`, c.userID, c.deviceID, c.connID, now).Scan(&key); err != nil {
			return 0, fmt.Errorf("new sliding sync connection: %w", err)
		}
		next = 1
		if err := s.pruneConns(ctx, tx, c.userID, c.deviceID); err != nil {
			return 0, err
		}
	case err != nil:
		return 0, fmt.Errorf("sliding sync connection: %w", err)
	default:
		next++
		s.memo.drop(key)
		if err := deleteConnData(ctx, tx, key); err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE sliding_sync_connections SET acked_pos = 0, acked_token = '', state = '{}',
			next_pos = $1, last_used_ts = $2 WHERE conn_key = $3`, next, now, key); err != nil {
			return 0, fmt.Errorf("reset sliding sync connection: %w", err)
		}
	}
	c.key = key
	return next, nil
}

func deleteConnData(ctx context.Context, tx *database.Tx, key int64) error {
	for _, q := range []string{
		`DELETE FROM sliding_sync_rooms WHERE conn_key = $1`,
		`DELETE FROM sliding_sync_room_pending WHERE conn_key = $1`,
		`DELETE FROM sliding_sync_positions WHERE conn_key = $1`,
	} {
		if _, err := tx.ExecContext(ctx, q, key); err != nil {
			return fmt.Errorf("drop sliding sync connection: %w", err)
		}
	}
	return nil
}

func (s *Service) pruneConns(ctx context.Context, tx *database.Tx, userID, deviceID string) error {
	keys, err := database.Int64s(ctx, tx, `SELECT conn_key FROM sliding_sync_connections WHERE user_id = $1 AND device_id = $2
		ORDER BY last_used_ts DESC, conn_key DESC`, userID, deviceID)
	if err != nil {
		return fmt.Errorf("sliding sync connections: %w", err)
	}
	if len(keys) <= maxConnsPerDevice {
		return nil
	}
	return s.dropConns(ctx, tx, keys[maxConnsPerDevice:])
}

func (s *Service) dropConns(ctx context.Context, tx *database.Tx, keys []int64) error {
	for _, k := range keys {
		s.memo.drop(k)
		if err := deleteConnData(ctx, tx, k); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM sliding_sync_connections WHERE conn_key = $1`, k); err != nil {
			return fmt.Errorf("drop sliding sync connection: %w", err)
		}
	}
	return nil
}

// DevicesDeleted drops the connections of devices that no longer exist.
func (s *Service) DevicesDeleted(ctx context.Context, userID string, deviceIDs []string) error {
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		for _, d := range deviceIDs {
			keys, err := database.Int64s(ctx, tx, `SELECT conn_key FROM sliding_sync_connections WHERE user_id = $1 AND device_id = $2`, userID, d)
			if err != nil {
				return fmt.Errorf("sliding sync connections: %w", err)
			}
			if err := s.dropConns(ctx, tx, keys); err != nil {
				return err
			}
		}
		return nil
	})
}

// expire drops the connections unused for connLifetime.
func (s *Service) expire(ctx context.Context) error {
	cutoff := time.Now().Add(-connLifetime).UnixMilli()
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		keys, err := database.Int64s(ctx, tx, `SELECT conn_key FROM sliding_sync_connections WHERE last_used_ts < $1`, cutoff)
		if err != nil {
			return fmt.Errorf("expired sliding sync connections: %w", err)
		}
		return s.dropConns(ctx, tx, keys)
	})
}

// PurgeRoom forgets what every connection was sent of a purged room: the
// room is gone, and no list can hold it again.
func (s *Service) PurgeRoom(ctx context.Context, roomID string) error {
	return s.db.DeleteRoomRows(ctx, roomID, "sliding_sync_rooms", "sliding_sync_room_pending")
}
