package roomserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/roomversions"
)

// Room upgrades: replacing a room with a new one of another room version.
// https://spec.matrix.org/v1.19/client-server-api/#room-upgrades

// UpgradeRequest is POST /rooms/{roomId}/upgrade.
type UpgradeRequest struct {
	RoomID     string
	UserID     string
	NewVersion string
	// AdditionalCreators are the creators of the new room besides the
	// upgrading user, in room versions with privileged creators (v12).
	// Those of the old room are not carried over: the upgrade is how the
	// set of creators changes.
	AdditionalCreators []string
}

// transferableState is the state copied to the new room: the spec's
// recommended list, less the power levels, which need care of their own.
// Membership is not copied (we cannot join other people), bar bans.
var transferableState = []string{
	"m.room.server_acl", spec.MRoomEncryption, spec.MRoomName, spec.MRoomAvatar, spec.MRoomTopic,
	spec.MRoomGuestAccess, spec.MRoomHistoryVisibility, spec.MRoomJoinRules,
}

// absentStateDefaults stand in for transferable state the old room lacks:
// they are what its absence meant there, and they keep createRoom's preset
// from choosing something else for the new room.
var absentStateDefaults = map[string]string{
	spec.MRoomJoinRules:         `{"join_rule":"invite"}`,
	spec.MRoomHistoryVisibility: `{"history_visibility":"shared"}`,
	spec.MRoomGuestAccess:       `{"guest_access":"forbidden"}`,
}

// upgrading holds the rooms being upgraded, so that two requests at once do
// not make two replacements. Keys are upgradeKey.
var upgrading sync.Map

type upgradeKey struct {
	s      *Service
	roomID string
}

// UpgradeRoom replaces a room with a new one of another version and returns
// the new room's ID, following the server behaviour the spec gives:
//
//  1. The user must be able to send m.room.tombstone in the old room
//     (403 M_FORBIDDEN otherwise).
//  2. The new room's m.room.create names the old room as predecessor and
//     keeps its type.
//  3. The transferable state is copied, and the bans.
//  4. The local aliases move to the new room, with the canonical alias.
//  5. The old room gets an m.room.tombstone pointing at the new one.
//  6. The old room's power levels are raised so that ordinary members can
//     no longer talk or invite there.
//
// Like Synapse we also move the room's directory listing.
func (s *Service) UpgradeRoom(ctx context.Context, req UpgradeRequest) (string, error) {
	// Only the versions we advertise in /capabilities.
	verImpl, err := roomversions.Get(gomatrixserverlib.RoomVersion(req.NewVersion))
	if err != nil {
		return "", err
	}
	if verImpl.PrivilegedCreators() {
		// Versions without additional creators ignore the field.
		for _, u := range req.AdditionalCreators {
			if _, err := spec.NewUserID(u, true); err != nil {
				return "", mxerr.InvalidParam("Invalid user ID in additional_creators: %q", u)
			}
		}
	}
	if _, err := s.RoomVersion(ctx, req.RoomID); err != nil {
		return "", err
	}
	key := upgradeKey{s, req.RoomID}
	if _, busy := upgrading.LoadOrStore(key, struct{}{}); busy {
		return "", mxerr.Unknown(400, "An upgrade of this room is already in progress")
	}
	defer upgrading.Delete(key)

	old, err := s.currentState(ctx, req.RoomID)
	if err != nil {
		return "", err
	}
	oldPL, err := powerLevels(old)
	if err != nil {
		return "", err
	}
	if old.membership(req.UserID) != "join" ||
		oldPL.UserLevel(spec.SenderID(req.UserID)) < oldPL.EventLevel("m.room.tombstone", true) {
		return "", mxerr.Forbidden("You may not upgrade this room: that needs the power to send m.room.tombstone")
	}

	plan, err := s.planUpgrade(ctx, old, verImpl, req)
	if err != nil {
		return "", err
	}
	published, err := s.Published(ctx, req.RoomID)
	if err != nil {
		return "", err
	}
	newID, err := s.CreateRoom(ctx, req.UserID, plan.create)
	if err != nil {
		return "", err
	}
	log := s.log.WithField("old_room_id", req.RoomID).WithField("new_room_id", newID)
	log.Info("upgrading room")

	// Bans, while the upgrader still has the power to ban (see
	// planUpgrade). The room exists now: a failure is logged, not fatal.
	for _, b := range plan.bans {
		if err := s.Ban(ctx, req.UserID, newID, b.target, b.reason); err != nil {
			log.WithError(err).WithField("user_id", b.target).Warn("could not carry a ban over to the upgraded room")
		}
	}
	if plan.finalPL != nil {
		if _, err := s.sendState(ctx, newID, req.UserID, spec.MRoomPowerLevels, plan.finalPL); err != nil {
			return "", fmt.Errorf("restore power levels in the new room: %w", err)
		}
	}

	tombstone := map[string]string{"body": "This room has been replaced", "replacement_room": newID}
	if _, err := s.sendState(ctx, req.RoomID, req.UserID, "m.room.tombstone", tombstone); err != nil {
		return "", err
	}
	// What follows works on the old room's state as of the tombstone, not
	// as of the start: a change made meanwhile must not be undone.
	if old, err = s.currentState(ctx, req.RoomID); err != nil {
		return "", err
	}
	if err := s.moveAliases(ctx, old, newID, req.UserID); err != nil {
		return "", err
	}
	if published {
		if err := s.SetPublished(ctx, newID, true); err != nil {
			return "", err
		}
		if err := s.SetPublished(ctx, req.RoomID, false); err != nil {
			return "", err
		}
	}
	if err := s.restrictOldRoom(ctx, old, req.UserID); err != nil {
		// The upgrader may lack the power to change the power levels;
		// the tombstone is there all the same.
		log.WithError(err).Warn("could not restrict the power levels of the upgraded room")
	}
	return newID, nil
}

type upgradeBan struct{ target, reason string }

// upgradePlan is the new room's creation request, and what to do after.
type upgradePlan struct {
	create CreateRoomRequest
	// finalPL are the power levels to set once the initial state is in,
	// when the upgrader needed more power than they will keep (nil if not).
	finalPL map[string]any
	bans    []upgradeBan
}

func (s *Service) planUpgrade(ctx context.Context, old *roomState, verImpl gomatrixserverlib.IRoomVersion, req UpgradeRequest) (*upgradePlan, error) {
	create := old.get(spec.MRoomCreate, "")
	if create == nil {
		return nil, fmt.Errorf("room %s has no create event", old.roomID)
	}
	var oldCreate map[string]json.RawMessage
	_ = json.Unmarshal(create.Content(), &oldCreate)

	// predecessor.event_id, deprecated since v1.16 but still to be set
	// where practical, is the last event of the old room we know; clients
	// link to it. (The tombstone cannot be it: in v12 the new room's ID,
	// which the tombstone names, comes from the create event's hash.)
	predecessor := map[string]string{"room_id": old.roomID}
	if last, err := s.lastEventID(ctx, old.roomID); err != nil {
		return nil, err
	} else if last != "" {
		predecessor["event_id"] = last
	}
	creation := map[string]any{"predecessor": predecessor}
	if t, ok := oldCreate["type"]; ok {
		creation["type"] = t
	}
	// A room closed to other servers stays closed.
	if f, ok := oldCreate["m.federate"]; ok && string(bytes.TrimSpace(f)) == "false" {
		creation["m.federate"] = false
	}
	newCreators := []string{req.UserID}
	if verImpl.PrivilegedCreators() {
		var extra []string
		for _, u := range req.AdditionalCreators {
			if u != req.UserID && !contains(extra, u) {
				extra = append(extra, u)
			}
		}
		if len(extra) > 0 {
			creation["additional_creators"] = extra
			newCreators = append(newCreators, extra...)
		}
	}

	newVersion := string(verImpl.Version())
	plan := &upgradePlan{create: CreateRoomRequest{
		RoomVersion:     &newVersion,
		Visibility:      "private", // the listing moves once the tombstone is sent
		Preset:          "private_chat",
		CreationContent: creation,
	}}
	for _, typ := range transferableState {
		content := json.RawMessage(absentStateDefaults[typ])
		if ev := old.get(typ, ""); ev != nil {
			content = ev.Content()
		}
		if len(content) > 0 {
			plan.create.InitialState = append(plan.create.InitialState, StateEvent{Type: typ, Content: content})
		}
	}
	if oldType, _ := jsonString(oldCreate["type"]); oldType == "m.space" {
		// A space keeps its rooms; an emptied m.space.child is a removed one.
		for t, ev := range old.state {
			if t.Type == spec.MSpaceChild && !isEmptyObject(ev.Content()) {
				plan.create.InitialState = append(plan.create.InitialState,
					StateEvent{Type: t.Type, StateKey: t.StateKey, Content: ev.Content()})
			}
		}
	}
	for t, ev := range old.state {
		if t.Type != spec.MRoomMember {
			continue
		}
		if m, _ := ev.Membership(); m == "ban" {
			var c struct {
				Reason string `json:"reason"`
			}
			_ = json.Unmarshal(ev.Content(), &c)
			plan.bans = append(plan.bans, upgradeBan{t.StateKey, c.Reason})
		}
	}

	initialPL, finalPL := upgradePowerLevels(old, verImpl, req.UserID, newCreators)
	plan.create.PowerLevelContentOverride = initialPL
	plan.finalPL = finalPL
	return plan, nil
}

// upgradePowerLevels works out the new room's power levels from the old
// room's: the initial ones, and the final ones if they differ.
//
//   - Levels become integers: room versions before 10 allowed strings.
//   - With privileged creators (v12) the new room's creators must not be
//     listed (the auth rules reject it); they outrank everyone anyway.
//   - Without them, creators of a v12 old room, who had no entry there,
//     are listed at the top level of the room, so that they keep their
//     standing.
//   - Without them, the upgrader must be able to send every initial state
//     event and the bans: like Synapse, we give them that level in the
//     initial power levels if they lack it, and set the old levels
//     afterwards (a user may always lower their own level).
func upgradePowerLevels(old *roomState, verImpl gomatrixserverlib.IRoomVersion, upgrader string, newCreators []string) (initial, final map[string]any) {
	pl := map[string]any{}
	if ev := old.get(spec.MRoomPowerLevels, ""); ev != nil {
		pl = normalizePowerLevels(ev.Content())
	} else if create := old.get(spec.MRoomCreate, ""); create != nil {
		// Without power levels the creator has 100.
		// https://spec.matrix.org/v1.19/client-server-api/#mroompower_levels
		pl["users"] = map[string]any{string(create.SenderID()): int64(100)}
	}
	// Fill in the spec's defaults, so that createRoom's own defaults
	// for keys the old room left out do not change their meaning.
	for k, v := range map[string]int64{
		"ban": 50, "kick": 50, "redact": 50, "invite": 0, "events_default": 0, "state_default": 50, "users_default": 0,
	} {
		if _, ok := pl[k].(int64); !ok {
			pl[k] = v
		}
	}
	for k, v := range map[string]map[string]any{
		"events": {}, "users": {}, "notifications": {"room": int64(50)},
	} {
		if _, ok := pl[k].(map[string]any); !ok {
			pl[k] = v
		}
	}
	users := pl["users"].(map[string]any)
	if verImpl.PrivilegedCreators() {
		for _, c := range newCreators {
			delete(users, c)
		}
		return pl, nil
	}
	if old.version.PrivilegedCreators() {
		top := topLevel(pl)
		for _, c := range oldCreators(old) {
			if _, ok := users[c]; !ok {
				users[c] = top
			}
		}
	}
	needed := max(plInt(pl, "state_default"), plInt(pl, "ban"))
	for _, v := range pl["events"].(map[string]any) {
		needed = max(needed, v.(int64))
	}
	have, ok := users[upgrader].(int64)
	if !ok {
		have = plInt(pl, "users_default")
	}
	if have >= needed {
		return pl, nil
	}
	initial = map[string]any{}
	for k, v := range pl {
		initial[k] = v
	}
	raised := map[string]any{upgrader: needed}
	for k, v := range users {
		if k != upgrader {
			raised[k] = v
		}
	}
	initial["users"] = raised
	return initial, pl
}

// normalizePowerLevels copies power levels content with every level as an
// int64, dropping values that are not levels, as Synapse's
// copy_and_fixup_power_levels_contents does.
func normalizePowerLevels(content []byte) map[string]any {
	dec := json.NewDecoder(bytes.NewReader(content))
	dec.UseNumber()
	var raw map[string]any
	_ = dec.Decode(&raw)
	out := map[string]any{}
	for k, v := range raw {
		if m, ok := v.(map[string]any); ok {
			levels := map[string]any{}
			for kk, vv := range m {
				if n, ok := asLevel(vv); ok {
					levels[kk] = n
				}
			}
			out[k] = levels
		} else if n, ok := asLevel(v); ok {
			out[k] = n
		}
	}
	return out
}

func asLevel(v any) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		n, err := x.Int64()
		return n, err == nil
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		return n, err == nil
	}
	return 0, false
}

func plInt(pl map[string]any, k string) int64 {
	n, _ := pl[k].(int64)
	return n
}

// topLevel is the highest level the power levels give or ask for, and at
// least 100.
func topLevel(pl map[string]any) int64 {
	top := int64(100)
	for k, v := range pl {
		switch x := v.(type) {
		case int64:
			top = max(top, x)
		case map[string]any:
			if k == "notifications" {
				continue
			}
			for _, n := range x {
				top = max(top, n.(int64))
			}
		}
	}
	return top
}

// oldCreators are a privileged-creators room's creators: the create event's
// sender and its additional_creators.
func oldCreators(rs *roomState) []string {
	create := rs.get(spec.MRoomCreate, "")
	if create == nil {
		return nil
	}
	creators := []string{string(create.SenderID())}
	var c struct {
		AdditionalCreators []string `json:"additional_creators"`
	}
	if json.Unmarshal(create.Content(), &c) == nil {
		creators = append(creators, c.AdditionalCreators...)
	}
	return creators
}

// moveAliases points the old room's local aliases at the new room and moves
// the canonical alias with them: the new room advertises the local
// aliases, the old room keeps only those of other servers, which we cannot
// move. Failures to send are logged: the upgrade has happened.
func (s *Service) moveAliases(ctx context.Context, old *roomState, newID, userID string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, newID, old.roomID); err != nil {
		return fmt.Errorf("move aliases: %w", err)
	}
	ev := old.get(spec.MRoomCanonicalAlias, "")
	if ev == nil {
		return nil
	}
	var c struct {
		Alias      string   `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	oldContent := map[string]any{}
	newContent := map[string]any{}
	if c.Alias != "" {
		if s.isLocal(c.Alias) {
			newContent["alias"] = c.Alias
		} else {
			oldContent["alias"] = c.Alias
		}
	}
	var oldAlt, newAlt []string
	for _, a := range c.AltAliases {
		if s.isLocal(a) {
			newAlt = append(newAlt, a)
		} else {
			oldAlt = append(oldAlt, a)
		}
	}
	if len(oldAlt) > 0 {
		oldContent["alt_aliases"] = oldAlt
	}
	if len(newAlt) > 0 {
		newContent["alt_aliases"] = newAlt
	}
	log := s.log.WithField("old_room_id", old.roomID).WithField("new_room_id", newID)
	if _, err := s.sendState(ctx, old.roomID, userID, spec.MRoomCanonicalAlias, oldContent); err != nil {
		log.WithError(err).Warn("could not update the canonical alias of the upgraded room")
	}
	if len(newContent) > 0 {
		if _, err := s.sendState(ctx, newID, userID, spec.MRoomCanonicalAlias, newContent); err != nil {
			log.WithError(err).Warn("could not set the canonical alias of the new room")
		}
	}
	return nil
}

// restrictOldRoom raises the levels to talk and to invite in the old room to
// the greater of 50 and users_default + 1, as the spec suggests.
func (s *Service) restrictOldRoom(ctx context.Context, old *roomState, userID string) error {
	ev := old.get(spec.MRoomPowerLevels, "")
	if ev == nil {
		return nil
	}
	pl := normalizePowerLevels(ev.Content())
	restricted := max(plInt(pl, "users_default")+1, 50)
	changed := false
	for _, k := range []string{"events_default", "invite"} {
		if plInt(pl, k) < restricted {
			pl[k] = restricted
			changed = true
		}
	}
	if !changed {
		return nil
	}
	_, err := s.sendState(ctx, old.roomID, userID, spec.MRoomPowerLevels, pl)
	return err
}

// sendState sends a state event with an empty state key.
func (s *Service) sendState(ctx context.Context, roomID, sender, typ string, content any) (*Event, error) {
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, err
	}
	key := ""
	return s.Send(ctx, SendRequest{RoomID: roomID, Sender: sender, Type: typ, StateKey: &key, Content: raw})
}

// lastEventID is the ID of a room's latest event in topological order.
func (s *Service) lastEventID(ctx context.Context, roomID string) (string, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND stream_pos > 0
		ORDER BY depth DESC, stream_pos DESC LIMIT 1`, roomID).Scan(&id)
	if isNoRows(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("last event: %w", err)
	}
	return id, nil
}

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err == nil
}

func isEmptyObject(content []byte) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(content, &m) == nil && len(m) == 0
}
