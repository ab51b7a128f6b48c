package syncapi

import (
	"context"
	"fmt"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/streampos"
)

// The to-device stream across the processes of a deployment that runs
// several on one PostgreSQL database (docs/scaling.md). Positions come
// from the syncapi_stream_positions counter row, whose lock makes every
// process's senders commit in position order; each such transaction
// announces its last position, and the other processes follow: they read
// whose devices got messages, advance their copy of the position and wake
// those users' syncs here. A message is stored for its device, so any
// process delivers it: nothing needs routing to an owner.

// Announcer tells the other processes, inside tx, that tx takes the
// stream's positions up to pos; it must reach them only if tx commits
// (NOTIFY).
type Announcer func(ctx context.Context, tx *database.Tx, pos int64) error

// SetAnnouncer makes the stream announce its positions with f and follow
// the other processes'. Call it once, before serving requests.
func (t *ToDevice) SetAnnouncer(f Announcer) {
	t.announce = f
	read := func(ctx context.Context) (int64, error) {
		var pos int64
		if err := t.db.QueryRowContext(ctx, `SELECT pos FROM syncapi_stream_positions WHERE stream = 'to_device'`).Scan(&pos); err != nil {
			return 0, fmt.Errorf("read to-device position: %w", err)
		}
		return pos, nil
	}
	t.follower = streampos.NewFollower(t.pos.Load(), read, t.queuedElsewhere)
}

// MovedElsewhere applies the messages up to position pos that another
// process queued (pos 0: up to the committed position, after
// notifications may have been missed).
func (t *ToDevice) MovedElsewhere(ctx context.Context, pos int64) error {
	return t.follower.Moved(ctx, pos)
}

// catchUp brings this process's position up to what the deployment
// committed (a client's token from another process may be ahead of it).
func (t *ToDevice) catchUp(ctx context.Context) error {
	if t.follower == nil {
		return nil
	}
	return t.follower.Moved(ctx, 0)
}

// queuedElsewhere wakes the recipients of the messages another process
// queued in (from, to]. Those already acknowledged are gone: their
// recipients have them.
func (t *ToDevice) queuedElsewhere(ctx context.Context, from, to int64) error {
	users, err := database.Strings(ctx, t.db, `SELECT DISTINCT user_id FROM to_device_messages
		WHERE stream_pos > $1 AND stream_pos <= $2`, from, to)
	if err != nil {
		return fmt.Errorf("to-device messages queued elsewhere: %w", err)
	}
	t.pos.Advance(to)
	for _, u := range users {
		t.notifier.Wake(u)
	}
	if t.onDelivered != nil && len(users) > 0 {
		t.onDelivered(users)
	}
	return nil
}
