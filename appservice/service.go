package appservice

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/roomserver"
)

// Rooms is what the senders read of the room server.
type Rooms interface {
	// EventsAfter returns committed events after a stream position,
	// oldest first.
	EventsAfter(ctx context.Context, from int64, limit int) ([]*roomserver.Event, error)
	CurrentPos() int64
	JoinedUsers(ctx context.Context, roomID string) ([]string, error)
	JoinedRooms(ctx context.Context, userID string) ([]string, error)
	// Aliases lists a room's local aliases.
	Aliases(ctx context.Context, roomID string) ([]string, error)
}

// ToDeviceMessage is one queued to-device message for one device.
type ToDeviceMessage struct {
	Pos              int64
	UserID, DeviceID string
	Sender, Type     string
	Content          json.RawMessage
}

// ToDevice is the to-device queue, read by stream position.
type ToDevice interface {
	Pos() int64
	MessagesAfter(ctx context.Context, from int64, limit int) ([]ToDeviceMessage, error)
	// AckDevice deletes a device's messages up to a position.
	AckDevice(ctx context.Context, userID, deviceID string, pos int64) error
}

// Receipts reads a room's receipts that changed after a receipts stream
// position: the m.receipt content and the position reached.
type Receipts interface {
	Pos(ctx context.Context) (int64, error)
	Since(ctx context.Context, roomID string, since int64) (content json.RawMessage, pos int64, err error)
}

// Keys reads what MSC3202 sends of the services' users' devices: their
// one-time key counts and unused fallback key algorithms.
type Keys interface {
	OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error)
	UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error)
}

// Config tunes the senders; the zero value is the defaults.
type Config struct {
	// MinBackoff and MaxBackoff bound the wait between attempts to
	// deliver a transaction (1 s doubling up to 5 min).
	MinBackoff, MaxBackoff time.Duration
	// MaxEvents bounds the room events of one transaction (100).
	MaxEvents int
	// Owns, in a deployment of several processes (docs/scaling.md),
	// reports whether this process pushes to the service with this ID:
	// one process does, so that each transaction goes out once. nil:
	// every service.
	Owns func(asID string) bool
}

// Service pushes what each application service is interested in to it:
// room events, and when it asks, ephemeral events, to-device messages and
// device list changes, in transactions, in order, retried while the
// service is down, resumed after a restart. And it asks services about
// users and aliases in their namespaces that the server does not know.
// https://spec.matrix.org/v1.19/application-service-api/#pushing-events
type Service struct {
	db       *database.DB
	set      *Set
	rooms    Rooms
	toDevice ToDevice
	receipts Receipts
	keys     Keys
	client   *Client
	cfg      Config
	log      logrus.FieldLogger

	interest *interest
	senders  []*sender

	// receiptPos is, per room, the receipts position already handed
	// to the senders; receiptStart is where an unseen room starts.
	receiptMu    sync.Mutex
	receiptPos   map[string]int64
	receiptStart int64

	stop chan struct{}
	wg   sync.WaitGroup
}

// New runs the migrations and prepares a sender for every service with a
// url. toDevice, receipts and keys may be nil. Start starts the senders.
func New(ctx context.Context, db *database.DB, set *Set, rooms Rooms, toDevice ToDevice, receipts Receipts, keys Keys,
	cfg Config, log logrus.FieldLogger) (*Service, error) {
	if err := db.Migrate(ctx, "appservice", migrations); err != nil {
		return nil, err
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = 100
	}
	s := &Service{
		db: db, set: set, rooms: rooms, toDevice: toDevice, receipts: receipts, keys: keys,
		client: NewClient(), cfg: cfg, log: log,
		interest:   newInterest(rooms, set.ServerName()),
		receiptPos: map[string]int64{},
		stop:       make(chan struct{}),
	}
	if receipts != nil {
		pos, err := receipts.Pos(ctx)
		if err != nil {
			return nil, err
		}
		s.receiptStart = pos
	}
	for _, r := range set.All() {
		if r.URL == nil || *r.URL == "" || cfg.Owns != nil && !cfg.Owns(r.ID) {
			continue
		}
		w, err := s.newSender(ctx, r)
		if err != nil {
			return nil, err
		}
		s.senders = append(s.senders, w)
	}
	return s, nil
}

// Start starts the senders: each first delivers the transaction it was
// delivering when the server stopped, if any, then what came since.
func (s *Service) Start() {
	for _, w := range s.senders {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			w.run()
		}()
	}
}

// Close stops the senders; an attempt in flight is abandoned and made
// again, under the same transaction ID, at the next start.
func (s *Service) Close() {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	for _, w := range s.senders {
		w.cancel()
	}
	s.wg.Wait()
}

// OnEvents is the room server's listener: it keeps the membership cache
// current and wakes the senders. It runs on the committer's goroutine and
// does no I/O.
func (s *Service) OnEvents(evs []*roomserver.Event) {
	if len(s.senders) == 0 {
		return
	}
	s.interest.observe(evs)
	for _, w := range s.senders {
		w.wake()
	}
}

// Typing hands a change of a room's typing users to the services with
// ephemeral events that are interested in the room.
func (s *Service) Typing(roomID string, userIDs []string) {
	if userIDs == nil {
		userIDs = []string{}
	}
	ev := map[string]any{"type": "m.typing", "room_id": roomID, "content": map[string]any{"user_ids": userIDs}}
	s.ephemeralForRoom(roomID, ev)
}

// ReceiptsChanged hands a room's new receipts to the services with
// ephemeral events that are interested in the room.
func (s *Service) ReceiptsChanged(roomID string) {
	if s.receipts == nil || !s.anyEphemeral() {
		return
	}
	ctx := context.Background()
	s.receiptMu.Lock()
	defer s.receiptMu.Unlock()
	since, ok := s.receiptPos[roomID]
	if !ok {
		since = s.receiptStart
	}
	content, pos, err := s.receipts.Since(ctx, roomID, since)
	if err != nil {
		s.log.WithError(err).WithField("room_id", roomID).Error("appservice: reading receipts")
		return
	}
	if len(s.receiptPos) > 100_000 {
		clear(s.receiptPos) // bounded; a dropped room starts from receiptStart again
		s.receiptStart = pos
	}
	s.receiptPos[roomID] = pos
	if len(content) == 0 || string(content) == "{}" {
		return
	}
	s.ephemeralForRoom(roomID, map[string]any{"type": "m.receipt", "room_id": roomID, "content": content})
}

// Presence hands a user's presence change to the services with ephemeral
// events interested in the user or sharing a room with them.
func (s *Service) Presence(userID string, content map[string]any) {
	if !s.anyEphemeral() {
		return
	}
	ctx := context.Background()
	rooms, err := s.rooms.JoinedRooms(ctx, userID)
	if err != nil {
		s.log.WithError(err).WithField("user_id", userID).Error("appservice: rooms of a presence change")
		return
	}
	ev := map[string]any{"type": "m.presence", "sender": userID, "content": content}
	for _, w := range s.senders {
		if !w.reg.Ephemeral() {
			continue
		}
		interested := w.reg.InterestedInUser(userID, s.set.ServerName())
		for _, roomID := range rooms {
			if interested {
				break
			}
			interested = s.interest.room(ctx, w.reg, roomID)
		}
		if interested {
			w.addEphemeral(ev)
		}
	}
}

// ToDeviceDelivered wakes the services of the recipients of new
// to-device messages.
func (s *Service) ToDeviceDelivered(userIDs []string) {
	for _, w := range s.senders {
		if !w.wantsToDevice() {
			continue
		}
		for _, u := range userIDs {
			if w.reg.InterestedInUser(u, s.set.ServerName()) {
				w.wake()
				break
			}
		}
	}
}

// DeviceListChanged tells the MSC3202 services of a change to a user's
// devices: theirs, or those of a user who shares a room with theirs.
func (s *Service) DeviceListChanged(userID string) {
	ctx := context.Background()
	var rooms []string
	loaded := false
	for _, w := range s.senders {
		if !w.reg.MSC3202 {
			continue
		}
		interested := w.reg.InterestedInUser(userID, s.set.ServerName())
		if !interested && !loaded {
			var err error
			if rooms, err = s.rooms.JoinedRooms(ctx, userID); err != nil {
				s.log.WithError(err).WithField("user_id", userID).Error("appservice: rooms of a device list change")
				return
			}
			loaded = true
		}
		for _, roomID := range rooms {
			if interested {
				break
			}
			interested = s.interest.membersInterest(ctx, w.reg, roomID)
		}
		if interested {
			w.deviceListChanged(userID)
		}
	}
}

// KeysClaimed tells the MSC3202 services whose users' one-time or
// fallback keys were claimed (user ID to device IDs), so that they get
// the new counts and upload more keys before they run out.
func (s *Service) KeysClaimed(claimed map[string][]string) {
	for _, w := range s.senders {
		if !w.reg.MSC3202 {
			continue
		}
		for u, devs := range claimed {
			if w.reg.InterestedInUser(u, s.set.ServerName()) {
				w.keysClaimed(u, devs)
			}
		}
	}
}

// WantsEphemeral reports whether a service asked for ephemeral events.
func (s *Service) WantsEphemeral() bool { return s.anyEphemeral() }

func (s *Service) anyEphemeral() bool {
	for _, w := range s.senders {
		if w.reg.Ephemeral() {
			return true
		}
	}
	return false
}

func (s *Service) ephemeralForRoom(roomID string, ev map[string]any) {
	ctx := context.Background()
	for _, w := range s.senders {
		if w.reg.Ephemeral() && s.interest.room(ctx, w.reg, roomID) {
			w.addEphemeral(ev)
		}
	}
}
