package calls

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/webhook"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/sirupsen/logrus"
	"github.com/twitchtv/twirp"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/roomserver"
)

// Guard keeps the SFU's participants in step with Matrix room membership,
// as MSC4195 asks: a user who leaves or is banned from a Matrix room is
// removed from its calls at once, and, since a LiveKit token cannot be
// revoked and stays good for an hour, each participant's membership is
// checked again whenever they (re)join the SFU, which tells us through
// its webhook.
//
// LiveKit identities are hashes, so the guard keeps a record of whom it
// issued each identity to (table calls_participants), written before the
// token leaves the server.
type Guard struct {
	db    *database.DB
	rooms Rooms
	log   logrus.FieldLogger
	keys  *auth.SimpleKeyProvider
	// sfu removes participants; set by Attach once the SFU runs.
	sfu *lksdk.RoomServiceClient

	ln   net.Listener
	http *http.Server
	// left carries (room, user) pairs whose membership ended, from the
	// room server's committer to the worker.
	left   chan [2]string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// guardQueue bounds the leaves waiting for the worker. The committer must
// never block on us; overflow is logged, and the join-time check still
// stops those users from coming back.
const guardQueue = 4096

// pruneAfter is how long a participant record outlives its last use. LiveKit
// refreshes connected participants' tokens, so a call can outlast the
// token it started with; a week covers any real call.
const pruneAfter = 7 * 24 * time.Hour

var guardMigrations = []database.Migration{
	{Version: 1, SQL: `
-- Who each LiveKit participant identity we issued a token for is: the
-- identities themselves are hashes (MSC4195).
CREATE TABLE calls_participants (
	lk_room   TEXT NOT NULL,
	identity  TEXT NOT NULL,
	room_id   TEXT NOT NULL,
	user_id   TEXT NOT NULL,
	-- Last issued or seen joining; old rows are pruned.
	seen_ts   INTEGER NOT NULL,
	PRIMARY KEY (lk_room, identity)
);
CREATE INDEX calls_participants_member ON calls_participants(room_id, user_id);
CREATE INDEX calls_participants_seen ON calls_participants(seen_ts);
`},
}

// NewGuard creates its table and starts the loopback listener the SFU's
// webhook posts to (WebhookURL); Attach connects it to the running SFU.
func NewGuard(ctx context.Context, db *database.DB, rooms Rooms, apiKey, apiSecret string, log logrus.FieldLogger) (*Guard, error) {
	if err := db.Migrate(ctx, "calls", guardMigrations); err != nil {
		return nil, fmt.Errorf("calls: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("calls: webhook listener: %w", err)
	}
	g := &Guard{
		db: db, rooms: rooms, log: log, ln: ln,
		keys: auth.NewSimpleKeyProvider(apiKey, apiSecret),
		left: make(chan [2]string, guardQueue),
	}
	g.http = &http.Server{Handler: http.HandlerFunc(g.webhook), ReadHeaderTimeout: 10 * time.Second}
	return g, nil
}

// WebhookURL is where the SFU must post its webhook events.
func (g *Guard) WebhookURL() string { return "http://" + g.ln.Addr().String() + "/" }

// Attach starts the guard against the SFU whose signalling is at addr.
func (g *Guard) Attach(addr, apiKey, apiSecret string) {
	g.sfu = lksdk.NewRoomServiceClient("http://"+addr, apiKey, apiSecret)
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.wg.Add(2)
	go func() {
		defer g.wg.Done()
		if err := g.http.Serve(g.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.WithError(err).Error("calls: webhook listener stopped")
		}
	}()
	go func() {
		defer g.wg.Done()
		g.work(ctx)
	}()
}

// Close stops the listener and the worker.
func (g *Guard) Close() {
	g.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.http.Shutdown(ctx)
		_ = g.ln.Close()
		if g.cancel != nil {
			g.cancel()
		}
		g.wg.Wait()
	})
}

// Record notes that identity in LiveKit room lkRoom is userID in roomID.
// It runs before the token is handed out.
func (g *Guard) Record(ctx context.Context, lkRoom, identity, roomID, userID string) error {
	_, err := g.db.ExecContext(ctx, `INSERT INTO calls_participants (lk_room, identity, room_id, user_id, seen_ts)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (lk_room, identity) DO UPDATE SET room_id = excluded.room_id, user_id = excluded.user_id, seen_ts = excluded.seen_ts`,
		lkRoom, identity, roomID, userID, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("calls: record participant: %w", err)
	}
	return nil
}

// OnEvents is the room server's listener: it runs on the committer, so it
// only picks out ended memberships and queues them.
func (g *Guard) OnEvents(evs []*roomserver.Event) {
	for _, ev := range evs {
		if ev.Type() != "m.room.member" || ev.StateKey() == nil {
			continue
		}
		m, err := ev.Membership()
		if err != nil || (m != "leave" && m != "ban") {
			continue
		}
		select {
		case g.left <- [2]string{ev.RoomID, *ev.StateKey()}:
		default:
			g.log.WithField("room_id", ev.RoomID).Warn("calls: membership queue full; the user is removed when they next join the SFU")
		}
	}
}

func (g *Guard) work(ctx context.Context) {
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-prune.C:
			if _, err := g.db.ExecContext(ctx, `DELETE FROM calls_participants WHERE seen_ts < $1`,
				time.Now().Add(-pruneAfter).UnixMilli()); err != nil && ctx.Err() == nil {
				g.log.WithError(err).Warn("calls: prune participant records")
			}
		case p := <-g.left:
			g.evict(ctx, p[0], p[1])
		}
	}
}

// evict removes userID's participants from roomID's calls, unless they
// are (again) joined by now.
func (g *Guard) evict(ctx context.Context, roomID, userID string) {
	if m, err := g.rooms.Membership(ctx, roomID, userID); err == nil && m == "join" {
		return
	}
	rows, err := g.db.QueryContext(ctx, `SELECT lk_room, identity FROM calls_participants WHERE room_id = $1 AND user_id = $2`, roomID, userID)
	if err != nil {
		g.log.WithError(err).Warn("calls: look up participants")
		return
	}
	var ps [][2]string
	for rows.Next() {
		var p [2]string
		if err := rows.Scan(&p[0], &p[1]); err != nil {
			rows.Close()
			g.log.WithError(err).Warn("calls: look up participants")
			return
		}
		ps = append(ps, p)
	}
	rows.Close()
	for _, p := range ps {
		g.remove(ctx, p[0], p[1], "left the Matrix room")
	}
}

// remove takes identity out of LiveKit room lkRoom; one that is not there
// is fine.
func (g *Guard) remove(ctx context.Context, lkRoom, identity, why string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := g.sfu.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: lkRoom, Identity: identity})
	var te twirp.Error
	switch {
	case err == nil:
		g.log.WithFields(logrus.Fields{"room": lkRoom, "reason": why}).Info("calls: removed a participant from the SFU")
	case errors.As(err, &te) && te.Code() == twirp.NotFound:
	default:
		g.log.WithError(err).WithField("room", lkRoom).Warn("calls: remove participant")
	}
}

// webhook receives the SFU's events, signed with our API key. On a join
// it checks the participant is still joined to the Matrix room.
func (g *Guard) webhook(w http.ResponseWriter, r *http.Request) {
	ev, err := webhook.ReceiveWebhookEvent(r, g.keys)
	if err != nil {
		http.Error(w, "invalid webhook", http.StatusUnauthorized)
		return
	}
	w.WriteHeader(http.StatusOK)
	if ev.GetEvent() != webhook.EventParticipantJoined || ev.Room == nil || ev.Participant == nil {
		return
	}
	lkRoom, identity := ev.Room.Name, ev.Participant.Identity
	var roomID, userID string
	var seen int64
	err = g.db.QueryRowContext(r.Context(), `SELECT room_id, user_id, seen_ts FROM calls_participants
		WHERE lk_room = $1 AND identity = $2`, lkRoom, identity).Scan(&roomID, &userID, &seen)
	if err != nil {
		// Every token to our SFU comes from us, and its record was
		// written first; a missing one was pruned after a week unseen.
		// The token's own checks stand.
		g.log.WithError(err).WithField("room", lkRoom).Debug("calls: no record of a joining participant")
		return
	}
	if m, err := g.rooms.Membership(r.Context(), roomID, userID); err == nil && m != "join" {
		g.remove(context.WithoutCancel(r.Context()), lkRoom, identity, "not joined to the Matrix room")
		return
	}
	// Keep the record of a long call (at most one write an hour).
	if now := time.Now(); now.Sub(time.UnixMilli(seen)) > time.Hour {
		if _, err := g.db.ExecContext(r.Context(), `UPDATE calls_participants SET seen_ts = $1 WHERE lk_room = $2 AND identity = $3`,
			now.UnixMilli(), lkRoom, identity); err != nil {
			g.log.WithError(err).Warn("calls: update participant record")
		}
	}
}
