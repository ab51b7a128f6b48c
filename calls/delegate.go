package calls

// Delegated delayed leave events (MSC4195): a client schedules its
// "left the call" membership event as an MSC4140 delayed event and hands
// the job of keeping it alive to us. We watch the client's participant on
// our own SFU: while it is connected we restart the delayed event; when it
// goes we send the event at once, instead of whenever the client's delay
// runs out. This closes the gap a crashed or offline client leaves, and it
// works even when the client cannot reach us any more but the SFU saw it
// leave.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/sirupsen/logrus"
	"github.com/twitchtv/twirp"

	"github.com/tessera-hs/tessera/delayed"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

const (
	// DefaultDelegatePollInterval is how often a delegated participant's
	// presence on the SFU is checked: a leave goes out at most this long
	// after the SFU notices it (an abrupt disconnect itself takes LiveKit
	// some seconds to notice).
	DefaultDelegatePollInterval = 2 * time.Second
	// DefaultDelegateConnectTimeout is how long we wait for the
	// participant to connect after the delegation. A client delegates
	// before it joins the SFU; one that never joins must not keep its
	// delayed event alive for ever.
	DefaultDelegateConnectTimeout = 2 * time.Minute

	// A delayed event is restarted every third of its delay, so that one
	// slow or failed restart still leaves headroom. The bounds keep a
	// client's tiny delay from turning into a stream of database writes,
	// and make a failed restart of a long delay retried within a minute.
	minRestartInterval = 250 * time.Millisecond
	maxRestartInterval = time.Minute
	// absentPolls is how many polls in a row must miss a participant
	// that was connected before its leave is sent (see run).
	absentPolls = 2
	// presenceTimeout bounds one question to the SFU.
	presenceTimeout = 5 * time.Second
)

// ErrDelegationsClosed is Start's answer once the server is stopping.
var ErrDelegationsClosed = errors.New("calls: delegated leaves are shut down")

// DelayedEvents is what delegations need of the delayed events service.
type DelayedEvents interface {
	Update(ctx context.Context, userID, delayID string, action delayed.Action) error
	Scheduled(ctx context.Context, userID string, f delayed.ListFilter) ([]delayed.Scheduled, error)
}

// DelegationConfig says where the SFU is and how often to look at it.
type DelegationConfig struct {
	// APIKey and APISecret sign the RoomAdmin tokens presence checks use.
	APIKey, APISecret string
	// SignalAddr is LiveKit's loopback host:port.
	SignalAddr string
	// PollInterval (0: DefaultDelegatePollInterval) and ConnectTimeout
	// (0: DefaultDelegateConnectTimeout), see the defaults.
	PollInterval   time.Duration
	ConnectTimeout time.Duration
}

// Delegation is one client's request: keep DelayID alive while MemberID's
// participant is in the call of SlotID in RoomID, send it when it leaves.
type Delegation struct {
	UserID, RoomID, SlotID, MemberID, DelayID string
	// Delay is the delayed event's delay, which paces the restarts.
	Delay time.Duration
	// LiveKitRoom and Identity name the participant to watch when it is
	// not MSC4195's (RoomName of RoomID and SlotID, MemberIdentity of
	// UserID and MemberID): the token service's endpoints derive
	// identities as lk-jwt-service does.
	LiveKitRoom, Identity string
}

// participant is the LiveKit room and identity the job watches.
func (del *Delegation) participant() (room, identity string) {
	if del.LiveKitRoom != "" {
		return del.LiveKitRoom, del.Identity
	}
	return RoomName(del.RoomID, del.SlotID), MemberIdentity(del.UserID, del.MemberID)
}

// Delegate checks that DelayID is one of the user's scheduled events, in
// RoomID (400 M_INVALID_PARAM otherwise: another user's delay ID is as
// unknown as a made-up one), takes its delay and starts the job.
func (d *Delegations) Delegate(ctx context.Context, del Delegation) error {
	evs, err := d.events.Scheduled(ctx, del.UserID, delayed.ListFilter{DelayIDs: []string{del.DelayID}})
	if err != nil {
		return err
	}
	if len(evs) != 1 {
		return mxerr.InvalidParam("delay_id is not one of your scheduled delayed events")
	}
	if evs[0].RoomID != del.RoomID {
		return mxerr.InvalidParam("The delayed event is not in room_id")
	}
	del.Delay = time.Duration(evs[0].Delay) * time.Millisecond
	return d.Start(del)
}

// Delegations runs one job per delegated delayed leave.
type Delegations struct {
	cfg    DelegationConfig
	events DelayedEvents
	log    logrus.FieldLogger
	rooms  *lksdk.RoomServiceClient
	// present asks the SFU whether a participant is in a room; a field so
	// that unit tests can stand in for the SFU.
	present func(ctx context.Context, room, identity string) (bool, error)

	ctx    context.Context // cancelled by Close: every job's parent
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	// A member has one job, and so has a delayed event: a new delegation
	// for either replaces the old job. Keying by delay ID too bounds a
	// user's jobs by their scheduled events (delayed.Config.MaxPerUser),
	// however many member IDs they make up.
	byMember map[memberKey]*delegateJob
	byDelay  map[delayKey]*delegateJob
}

type memberKey struct{ user, room, slot, member string }
type delayKey struct{ user, delayID string }

type delegateJob struct {
	Delegation
	cancel context.CancelFunc
	done   chan struct{} // closed when the job has ended
}

func (j *delegateJob) memberKey() memberKey {
	return memberKey{j.UserID, j.RoomID, j.SlotID, j.MemberID}
}
func (j *delegateJob) delayKey() delayKey { return delayKey{j.UserID, j.DelayID} }

// NewDelegations builds the service; Close stops it.
func NewDelegations(cfg DelegationConfig, events DelayedEvents, log logrus.FieldLogger) *Delegations {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultDelegatePollInterval
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultDelegateConnectTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Delegations{
		cfg: cfg, events: events, log: log,
		rooms:    lksdk.NewRoomServiceClient("http://"+cfg.SignalAddr, cfg.APIKey, cfg.APISecret),
		ctx:      ctx,
		cancel:   cancel,
		byMember: map[memberKey]*delegateJob{},
		byDelay:  map[delayKey]*delegateJob{},
	}
	d.present = d.getParticipant
	return d
}

// Start begins watching del's participant, replacing an earlier job for
// the same member or the same delayed event. It does not wait for
// anything: the caller has checked that the delayed event is the user's.
func (d *Delegations) Start(del Delegation) error {
	j := &delegateJob{Delegation: del, done: make(chan struct{})}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrDelegationsClosed
	}
	var replaced []*delegateJob
	if old := d.byMember[j.memberKey()]; old != nil {
		replaced = append(replaced, old)
	}
	if old := d.byDelay[j.delayKey()]; old != nil && (len(replaced) == 0 || old != replaced[0]) {
		replaced = append(replaced, old)
	}
	for _, old := range replaced {
		old.cancel()
		d.forgetLocked(old)
	}
	var ctx context.Context
	ctx, j.cancel = context.WithCancel(d.ctx)
	d.byMember[j.memberKey()] = j
	d.byDelay[j.delayKey()] = j
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(j.done)
		defer d.forget(j)
		defer j.cancel()
		// The replaced jobs are cancelled; let them finish whatever
		// restart they were doing, so that two jobs never act on one
		// member at once.
		for _, old := range replaced {
			select {
			case <-old.done:
			case <-ctx.Done():
				return
			}
		}
		d.run(ctx, j)
	}()
	return nil
}

// Close stops every job and waits for them. Delayed events they kept
// alive stay scheduled and fire on their own delay (also after a
// restart of the server). Call it before the delayed events service and
// the SFU stop: the SFU stopping would look like everyone leaving.
func (d *Delegations) Close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

// forget removes j from the indexes unless a newer job took its place.
func (d *Delegations) forget(j *delegateJob) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.forgetLocked(j)
}

func (d *Delegations) forgetLocked(j *delegateJob) {
	if d.byMember[j.memberKey()] == j {
		delete(d.byMember, j.memberKey())
	}
	if d.byDelay[j.delayKey()] == j {
		delete(d.byDelay, j.delayKey())
	}
}

// restartInterval paces the restarts of a delayed event of delay d.
func restartInterval(d time.Duration) time.Duration {
	return min(max(d/3, minRestartInterval), maxRestartInterval)
}

// run is one job: wait for the participant, keep the delayed event alive
// while it is there, send the event once it has gone.
func (d *Delegations) run(ctx context.Context, j *delegateJob) {
	log := d.log.WithFields(logrus.Fields{"user_id": j.UserID, "room_id": j.RoomID, "delay_id": httpx.LogID(j.DelayID)})
	room, identity := j.participant()
	// A restart now gives the full delay of headroom from here on, and
	// ends the job at once if the event has gone already.
	if !d.restart(ctx, j, log) {
		return
	}
	poll := time.NewTicker(d.cfg.PollInterval)
	defer poll.Stop()
	restart := time.NewTicker(restartInterval(j.Delay))
	defer restart.Stop()
	waitUntil := time.Now().Add(d.cfg.ConnectTimeout)
	var (
		connected bool
		// absent counts the polls in a row that found the connected
		// participant gone. One is not enough: a client that fully
		// reconnects (new signalling connection, same identity) is
		// briefly absent, and a leave sent then would drop it from the
		// call until it noticed and rejoined.
		absent int
		// failingSince is when presence checks began failing. While we
		// cannot tell whether the participant is there, we stop keeping
		// its leave alive: should the SFU stay unreachable, the event
		// fires on its own delay, which is what the client asked for
		// without delegation.
		failingSince time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-restart.C:
			if !failingSince.IsZero() {
				continue
			}
			if !d.restart(ctx, j, log) {
				return
			}
		case <-poll.C:
			present, err := d.present(ctx, room, identity)
			if ctx.Err() != nil {
				return
			}
			now := time.Now()
			if err != nil {
				if failingSince.IsZero() {
					failingSince = now
					log.WithError(err).Warn("calls: cannot tell whether a delegated participant is connected")
				}
				if now.Sub(failingSince) > j.Delay || (!connected && now.After(waitUntil)) {
					return // the event fires (or has fired) on its own
				}
				continue
			}
			failingSince = time.Time{}
			switch {
			case present:
				if !connected {
					log.Debug("calls: delegated participant connected")
				}
				connected, absent = true, 0
			case connected:
				if absent++; absent < absentPolls {
					continue
				}
				// Gone from the SFU: the client left or vanished.
				if err := d.events.Update(ctx, j.UserID, j.DelayID, delayed.SendNow); err != nil && !isNotFound(err) && ctx.Err() == nil {
					log.WithError(err).Warn("calls: sending a delegated leave event")
				} else if err == nil {
					log.Debug("calls: delegated participant left; leave event sent")
				}
				return
			case now.After(waitUntil):
				log.Info("calls: delegated participant never connected; leaving its leave event to its delay")
				return
			}
		}
	}
}

// restart restarts the job's delayed event. It reports false when the job
// should end: the event has gone (the client cancelled or sent it, or it
// fired) or the job was stopped. Other failures are logged and the next
// tick tries again.
func (d *Delegations) restart(ctx context.Context, j *delegateJob, log logrus.FieldLogger) bool {
	err := d.events.Update(ctx, j.UserID, j.DelayID, delayed.Restart)
	switch {
	case err == nil:
		return true
	case ctx.Err() != nil:
		return false
	case isNotFound(err):
		log.Debug("calls: delegated delayed event is gone; delegation ended")
		return false
	default:
		log.WithError(err).Warn("calls: restarting a delegated delayed event")
		return true
	}
}

func isNotFound(err error) bool {
	e, ok := mxerr.As(err)
	return ok && e.Code == "M_NOT_FOUND"
}

// getParticipant asks LiveKit's RoomService (over loopback) whether
// identity is in room. Not found, for the room or the participant, is
// absence; so is a participant LiveKit marks disconnected. A participant
// still joining counts as present: it is on its way in, and if it never
// gets there LiveKit drops it and we see it go.
func (d *Delegations) getParticipant(ctx context.Context, room, identity string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, presenceTimeout)
	defer cancel()
	p, err := d.rooms.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: room, Identity: identity})
	var te twirp.Error
	switch {
	case errors.As(err, &te) && te.Code() == twirp.NotFound:
		return false, nil
	case err != nil:
		return false, fmt.Errorf("LiveKit GetParticipant: %w", err)
	}
	return p.State != livekit.ParticipantInfo_DISCONNECTED, nil
}
