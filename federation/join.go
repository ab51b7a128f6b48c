package federation

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// JoinRemote joins a local user to a room that lives on other servers:
// make_join and send_join through the first of servers that answers,
// verifying the state and auth chain it returns, then storing the room.
// https://spec.matrix.org/v1.19/server-server-api/#joining-rooms
func (a *API) JoinRemote(ctx context.Context, userID, roomID string, servers []spec.ServerName, content map[string]any) error {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return mxerr.InvalidParam("Invalid user ID")
	}
	rid, err := spec.NewRoomID(roomID)
	if err != nil {
		return mxerr.InvalidParam("Invalid room ID")
	}
	if a.keyRing == nil {
		return errors.New("federation: no key ring")
	}
	var errs []error
	for _, srv := range servers {
		if srv == a.cfg.ServerName || (a.cfg.Allowed != nil && !a.cfg.Allowed(srv)) {
			continue
		}
		if content == nil {
			content = map[string]any{}
		}
		content["membership"] = spec.Join
		res, ferr := gomatrixserverlib.PerformJoin(ctx, joinClient{a.client}, gomatrixserverlib.PerformJoinInput{
			UserID:     uid,
			RoomID:     rid,
			ServerName: srv,
			Content:    content,
			PrivateKey: a.cfg.PrivateKey,
			KeyID:      a.cfg.KeyID,
			KeyRing:    a.keyRing,
			EventProvider: func(ver gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
				return a.fetchEvents(ctx, srv, ver, ids)
			},
			UserIDQuerier: roomserver.UserIDForSender,
			GetOrCreateSenderID: func(context.Context, spec.UserID, spec.RoomID, string) (spec.SenderID, ed25519.PrivateKey, error) {
				return spec.SenderID(userID), nil, nil
			},
			StoreSenderIDFromPublicID: func(context.Context, spec.SenderID, string, spec.RoomID) error { return nil },
		})
		if ferr != nil {
			errs = append(errs, fmt.Errorf("%s: %w", srv, ferr.Err))
			continue
		}
		ver := res.JoinEvent.Version()
		state := res.StateSnapshot.GetStateEvents().UntrustedEvents(ver)
		chain := res.StateSnapshot.GetAuthEvents().UntrustedEvents(ver)
		if _, err := a.rooms.StoreRemoteJoin(ctx, srv, ver, res.JoinEvent, state, chain); err != nil {
			return fmt.Errorf("store the joined room: %w", err)
		}
		if a.joined != nil {
			a.joined(ctx, roomID)
		}
		return nil
	}
	if len(errs) == 0 {
		return mxerr.NotFound("No server to join %s through", roomID)
	}
	a.log.WithError(errors.Join(errs...)).WithField("room_id", roomID).Warn("joining a remote room failed")
	// A server in the room that refused the join (403 for a knock-only
	// or invite-only room, 404 for a room it is not in, ...) said why:
	// the client gets that answer, not a gateway error.
	for _, err := range errs {
		if me, ok := mxerr.As(remoteError("", err)); ok && me.Status < 500 {
			return me
		}
	}
	return &mxerr.Error{Status: 502, Code: "M_UNKNOWN", Message: fmt.Sprintf("Could not join through any server: %v", errors.Join(errs...))}
}

// fetchEvents gets events the join response referred to but did not
// include, from the server we joined through.
func (a *API) fetchEvents(ctx context.Context, srv spec.ServerName, ver gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
	var out []gomatrixserverlib.PDU
	for _, id := range ids {
		txn, err := a.client.GetEvent(ctx, a.cfg.ServerName, srv, id)
		if err != nil {
			return nil, fmt.Errorf("fetch event %s: %w", id, err)
		}
		for _, raw := range txn.PDUs {
			p, err := parsePDU(ctx, a.verifier, ver, raw)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// joinClient adapts the federation client to what PerformJoin calls.
type joinClient struct{ c fclient.FederationClient }

func (j joinClient) MakeJoin(ctx context.Context, origin, s spec.ServerName, roomID, userID string) (gomatrixserverlib.MakeJoinResponse, error) {
	r, err := j.c.MakeJoin(ctx, origin, s, roomID, userID)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (j joinClient) SendJoin(ctx context.Context, origin, s spec.ServerName, ev gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error) {
	r, err := j.c.SendJoin(ctx, origin, s, ev)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// SetJoinedHook sets a function called when one of our users has joined a
// room through another server, before the join is answered (the key
// store marks the room's remote members' device lists stale).
func (a *API) SetJoinedHook(f func(ctx context.Context, roomID string)) { a.joined = f }
