package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/streampos"
)

// Typing across the processes of a deployment that runs several on one
// PostgreSQL database (docs/scaling.md). Each room's typing users are kept
// by the room's owner, as its sequencer is: a change that reaches another
// process is delegated to the owner, whose timers end each user's typing
// once. The owner stores each change of a room's set (syncapi_typing) at
// the next position of the typing counter row, whose lock orders the
// owners' writes, and announces it in the same transaction; every process,
// the owner included, then reads the changes up to that position
// (streampos.Follower), copies the sets into its own rooms map, which its
// syncs read, advances its position and wakes the rooms' members.

// TypingCluster is what typing needs from the deployment.
type TypingCluster struct {
	// Owns reports whether this process owns a room.
	Owns func(roomID string) bool
	// Delegate runs Set on the room's owner.
	Delegate func(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error
	// Announce tells the other processes, inside tx, that tx takes the
	// typing stream's position pos; it must reach them only if tx commits.
	Announce func(ctx context.Context, tx *database.Tx, pos int64) error
}

type typingCluster struct {
	TypingCluster
	db       *database.DB
	follower *streampos.Follower
	// pubMu keeps the owner's changes in the order they are made, from
	// the change in memory to its commit.
	pubMu sync.Mutex
}

// delegateTimeout bounds the call to a room's owner.
const delegateTimeout = 10 * time.Second

// SetCluster makes typing shared with the other processes: it loads what
// they have stored, ends the typing this process kept for its rooms before
// a restart (its timers are gone), and takes positions from the database
// from now on. Call it once, before serving requests.
func (t *Typing) SetCluster(ctx context.Context, db *database.DB, c TypingCluster) error {
	// A token from a single process holds the clock's milliseconds
	// (newTypingStream): the counter starts above them.
	if _, err := db.ExecContext(ctx, `UPDATE syncapi_stream_positions SET pos = $1 WHERE stream = 'typing' AND pos < $1`,
		time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("typing position: %w", err)
	}
	read := func(ctx context.Context) (int64, error) {
		var pos int64
		if err := db.QueryRowContext(ctx, `SELECT pos FROM syncapi_stream_positions WHERE stream = 'typing'`).Scan(&pos); err != nil {
			return 0, fmt.Errorf("read typing position: %w", err)
		}
		return pos, nil
	}
	tc := &typingCluster{TypingCluster: c, db: db}
	tc.follower = streampos.NewFollower(0, read, t.changedElsewhere)
	t.mu.Lock()
	t.pos = 0
	t.cluster = tc
	t.mu.Unlock()
	// Every stored set (those of rooms no one types in are empty).
	if err := tc.follower.Moved(ctx, 0); err != nil {
		return err
	}
	var stale []string
	t.mu.Lock()
	for roomID, room := range t.rooms {
		if len(room.users) > 0 && c.Owns(roomID) {
			stale = append(stale, roomID)
		}
	}
	t.mu.Unlock()
	for _, roomID := range stale {
		tc.pubMu.Lock()
		t.mu.Lock()
		clear(t.rooms[roomID].users)
		t.mu.Unlock()
		t.publish(roomID, []string{})
		tc.pubMu.Unlock()
	}
	return nil
}

// MovedElsewhere applies the typing changes up to position pos that
// another process stored (pos 0: up to the committed position, after
// notifications may have been missed).
func (t *Typing) MovedElsewhere(ctx context.Context, pos int64) error {
	return t.cluster.follower.Moved(ctx, pos)
}

func (t *Typing) catchUp(ctx context.Context) error {
	if t.cluster == nil {
		return nil
	}
	return t.cluster.follower.Moved(ctx, 0)
}

// delegate has the room's owner run Set. Typing is best effort: a failure
// is logged.
func (t *Typing) delegate(roomID, userID string, typing bool, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), delegateTimeout)
	defer cancel()
	if err := t.cluster.Delegate(ctx, roomID, userID, typing, timeout); err != nil {
		t.notifier.log.WithError(err).WithField("room_id", roomID).Warn("typing: telling the room's owner")
	}
}

// publish stores a room's typing users (the owner's change, made under
// pubMu) and applies it here as the others will.
func (t *Typing) publish(roomID string, userIDs []string) {
	ctx, cancel := context.WithTimeout(context.Background(), delegateTimeout)
	defer cancel()
	c := t.cluster
	list, err := json.Marshal(userIDs)
	if err != nil {
		return
	}
	var pos int64
	err = c.db.WithTx(ctx, func(tx *database.Tx) error {
		if err := tx.QueryRowContext(ctx, `UPDATE syncapi_stream_positions SET pos = pos + 1
			WHERE stream = 'typing' RETURNING pos`).Scan(&pos); err != nil {
			return fmt.Errorf("next typing position: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO syncapi_typing (room_id, user_ids, stream_pos) VALUES ($1, $2, $3)
			ON CONFLICT (room_id) DO UPDATE SET user_ids = excluded.user_ids, stream_pos = excluded.stream_pos`,
			roomID, string(list), pos); err != nil {
			return fmt.Errorf("store typing: %w", err)
		}
		return c.Announce(ctx, tx, pos)
	})
	if err == nil {
		err = c.follower.Moved(ctx, pos)
	}
	if err != nil {
		t.notifier.log.WithError(err).WithField("room_id", roomID).Error("typing: sharing a change")
	}
}

// changedElsewhere copies the typing sets stored in (from, to] into the
// rooms map (the owner's own rooms keep their typists and timers: only
// their positions move), then wakes the rooms' members.
func (t *Typing) changedElsewhere(ctx context.Context, from, to int64) error {
	rows, err := t.cluster.db.QueryContext(ctx, `SELECT room_id, user_ids, stream_pos FROM syncapi_typing
		WHERE stream_pos > $1 AND stream_pos <= $2`, from, to)
	if err != nil {
		return fmt.Errorf("typing changes: %w", err)
	}
	type change struct {
		roomID string
		users  []string
		pos    int64
	}
	var changes []change
	for rows.Next() {
		var ch change
		var list string
		if err := rows.Scan(&ch.roomID, &list, &ch.pos); err != nil {
			rows.Close()
			return fmt.Errorf("typing changes: %w", err)
		}
		if err := json.Unmarshal([]byte(list), &ch.users); err != nil {
			rows.Close()
			return fmt.Errorf("typing changes of %s: %w", ch.roomID, err)
		}
		changes = append(changes, ch)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("typing changes: %w", err)
	}
	t.mu.Lock()
	for _, ch := range changes {
		room := t.rooms[ch.roomID]
		if room == nil {
			room = &typingRoom{users: map[string]*typist{}}
			t.rooms[ch.roomID] = room
		}
		if !t.cluster.Owns(ch.roomID) {
			clear(room.users)
			for _, u := range ch.users {
				room.users[u] = &typist{}
			}
		}
		room.pos = max(room.pos, ch.pos)
	}
	t.pos = max(t.pos, to)
	t.mu.Unlock()
	for _, ch := range changes {
		if from == 0 {
			continue // loading at start-up: nobody waits yet
		}
		t.notifier.WakeRoom(ch.roomID)
		if t.onChange != nil {
			t.onChange(ch.roomID, ch.users)
		}
	}
	return nil
}
