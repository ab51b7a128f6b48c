package roomserver

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/roomversions"
)

// CreateRoomRequest is POST /createRoom's body.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3createroom
type CreateRoomRequest struct {
	Visibility                string            `json:"visibility"`
	RoomAliasName             string            `json:"room_alias_name"`
	Name                      *string           `json:"name"`
	Topic                     *string           `json:"topic"`
	Invite                    []string          `json:"invite"`
	Invite3PID                []json.RawMessage `json:"invite_3pid"`
	RoomVersion               *string           `json:"room_version"` // nil: the default; "" is refused
	CreationContent           map[string]any    `json:"creation_content"`
	InitialState              []StateEvent      `json:"initial_state"`
	Preset                    string            `json:"preset"`
	IsDirect                  bool              `json:"is_direct"`
	PowerLevelContentOverride map[string]any    `json:"power_level_content_override"`
}

// StateEvent is an entry of initial_state.
type StateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

type presetRules struct {
	joinRule, historyVisibility, guestAccess string
	inviteesAreAdmins                        bool
}

var presets = map[string]presetRules{
	"private_chat":         {"invite", "shared", "can_join", false},
	"trusted_private_chat": {"invite", "shared", "can_join", true},
	"public_chat":          {"public", "shared", "forbidden", false},
}

// CreateRoom creates a room with creator as its first member, following the
// order of events the spec gives, and returns the room ID. All the initial
// events are committed in one transaction: the room appears whole or not
// at all.
func (s *Service) CreateRoom(ctx context.Context, creator string, req CreateRoomRequest) (string, error) {
	version := s.cfg.DefaultRoomVersion
	if req.RoomVersion != nil {
		version = gomatrixserverlib.RoomVersion(*req.RoomVersion)
	}
	verImpl, err := roomversions.Get(version)
	if err != nil {
		return "", err
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return "", mxerr.InvalidParam("visibility must be \"public\" or \"private\"")
	}
	presetName := req.Preset
	if presetName == "" {
		presetName = "private_chat"
		if req.Visibility == "public" {
			presetName = "public_chat"
		}
	}
	preset, ok := presets[presetName]
	if !ok {
		return "", mxerr.InvalidParam("Unknown preset %q", req.Preset)
	}
	if len(req.Invite3PID) > 0 {
		return "", mxerr.ThreePIDDenied()
	}
	// Users of other servers are invited once the room exists: their
	// server must sign each invite, which needs the room's state (as in
	// Synapse, which invites them after creating the room).
	var localInvites, remoteInvites []string
	for _, u := range req.Invite {
		if _, err := spec.NewUserID(u, true); err != nil {
			return "", mxerr.InvalidParam("Invalid user ID in invite: %q", u)
		}
		if !s.isLocal(u) && s.inviter != nil {
			remoteInvites = append(remoteInvites, u)
			continue
		}
		if err := s.checkInvitee(ctx, u); err != nil {
			return "", err
		}
		localInvites = append(localInvites, u)
	}
	var alias string
	if req.RoomAliasName != "" {
		alias = "#" + req.RoomAliasName + ":" + string(s.cfg.ServerName)
		if err := validateAlias(alias); err != nil {
			return "", err
		}
		if err := s.checkAliasGuard(alias, creator); err != nil {
			return "", err
		}
		if id, err := s.storedAlias(ctx, alias); err == nil && id != "" {
			return "", &mxerr.Error{Status: 400, Code: "M_ROOM_IN_USE", Message: "Room alias already taken"}
		}
	}

	rs := &roomState{version: verImpl, state: map[tuple]*Event{}}
	if !verImpl.DomainlessRoomIDs() {
		// In a cluster, an ID this process owns: the room is created
		// where the request landed, by the process every later write
		// goes to (about as many draws as instances).
		for rs.roomID == "" || !s.owns(rs.roomID) {
			rs.roomID = "!" + randomAlnum(18) + ":" + string(s.cfg.ServerName)
		}
	}

	// 1. m.room.create
	createContent := map[string]any{}
	for k, v := range req.CreationContent {
		createContent[k] = v
	}
	createContent["room_version"] = string(version)
	if verImpl.CreatorInCreateEvent() {
		createContent["creator"] = creator
	} else {
		delete(createContent, "creator")
	}
	if preset.inviteesAreAdmins && verImpl.PrivilegedCreators() && len(req.Invite) > 0 {
		// With privileged creators (v12), trusted invitees are made
		// creators rather than listed in the power levels.
		// They are added to any the client gave in creation_content.
		var creators []any
		if given, ok := createContent["additional_creators"].([]any); ok {
			creators = given
		}
		for _, u := range req.Invite {
			if !slices.Contains(creators, any(u)) {
				creators = append(creators, u)
			}
		}
		createContent["additional_creators"] = creators
	}

	// 3. m.room.power_levels
	plUsers := map[string]any{}
	if !verImpl.PrivilegedCreators() {
		plUsers[creator] = 100
		if preset.inviteesAreAdmins {
			for _, u := range req.Invite {
				plUsers[u] = 100
			}
		}
	}
	pl := map[string]any{
		"users":          plUsers,
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         50,
		"events": map[string]any{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"notifications": map[string]any{"room": 50},
	}
	if verImpl.PrivilegedCreators() {
		// From room version 12 the tombstone must need more than
		// state_default: 150, as the spec suggests and Synapse does.
		// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3createroom
		pl["events"].(map[string]any)["m.room.tombstone"] = 150
	}
	if presetName != "public_chat" {
		pl["invite"] = 0 // in a private chat any member may invite, as in Synapse
	}
	if t, _ := createContent["type"].(string); t == videoRoomType {
		// A video room: every member may join its call, which means
		// sending their own MatrixRTC membership state (MSC3401), as
		// Element creates these rooms.
		evs := pl["events"].(map[string]any)
		for _, typ := range []string{"org.matrix.msc3401.call.member", "m.call.member"} {
			evs[typ] = 0
		}
	}
	for k, v := range req.PowerLevelContentOverride {
		pl[k] = v
	}

	type stateSpec struct {
		typ, key string
		content  any
	}
	creatorName, creatorAvatar, err := s.profiles.MemberProfile(ctx, creator)
	if err != nil {
		return "", err
	}
	events := []stateSpec{
		{spec.MRoomCreate, "", createContent},
		{spec.MRoomMember, creator, memberContent("join", creatorName, creatorAvatar, "", false)},
		{spec.MRoomPowerLevels, "", pl},
	}
	if alias != "" {
		events = append(events, stateSpec{"m.room.canonical_alias", "", map[string]any{"alias": alias}})
	}
	initial := map[tuple]bool{}
	for _, e := range req.InitialState {
		initial[tuple{e.Type, e.StateKey}] = true
	}
	for _, e := range []stateSpec{
		{spec.MRoomJoinRules, "", map[string]any{"join_rule": preset.joinRule}},
		{spec.MRoomHistoryVisibility, "", map[string]any{"history_visibility": preset.historyVisibility}},
		{"m.room.guest_access", "", map[string]any{"guest_access": preset.guestAccess}},
	} {
		if !initial[tuple{e.typ, e.key}] {
			events = append(events, e)
		}
	}
	for _, e := range req.InitialState {
		if e.Type == "" {
			return "", mxerr.BadJSON("initial_state entries need a type")
		}
		events = append(events, stateSpec{e.Type, e.StateKey, e.Content})
	}
	if req.Name != nil {
		events = append(events, stateSpec{"m.room.name", "", map[string]any{"name": *req.Name}})
	}
	if req.Topic != nil {
		events = append(events, stateSpec{"m.room.topic", "", map[string]any{
			"topic": *req.Topic,
			// TopicContentBlock: an object whose m.text lists the
			// representations (v1.15).
			// https://spec.matrix.org/v1.19/client-server-api/#mroomtopic
			"m.topic": map[string]any{"m.text": []map[string]string{{"mimetype": "text/plain", "body": *req.Topic}}},
		}})
	}
	for _, u := range localInvites {
		name, avatar, err := s.profiles.MemberProfile(ctx, u)
		if err != nil {
			return "", err
		}
		events = append(events, stateSpec{spec.MRoomMember, u, memberContent("invite", name, avatar, "", req.IsDirect)})
	}

	var pending []*pendingEvent
	for _, e := range events {
		content, err := json.Marshal(e.content)
		if err != nil {
			return "", mxerr.BadJSON("Invalid content for %s", e.typ)
		}
		key := e.key
		er := EventRequest{Sender: creator, Type: e.typ, StateKey: &key, Content: content}
		if e.typ == spec.MRoomCreate {
			er.ts = s.createTime()
		}
		pe, err := s.build(ctx, rs, er)
		for err == nil && e.typ == spec.MRoomCreate && !s.owns(pe.ev.RoomID) {
			// From room version 12 the room ID is the create event's
			// hash: another timestamp gives another ID, until one this
			// process owns (see above).
			er.ts = s.createTime()
			pe, err = s.build(ctx, rs, er)
		}
		if err != nil {
			if me, ok := mxerr.As(err); ok && me.Code == "M_FORBIDDEN" {
				// The creator may do anything at creation; a refusal means
				// the request itself is contradictory.
				return "", mxerr.InvalidParam("Cannot create room: %s event: %s", e.typ, me.Message)
			}
			return "", err
		}
		s.apply(rs, pe)
		pending = append(pending, pe)
	}
	err = s.commit.submit(&commitReq{
		roomID: rs.roomID, newRoom: string(version), events: pending,
		extremities: rs.extremities, stateGroup: rs.group,
		// The alias is written with the room: checked above, it may
		// still have been taken since by a concurrent createRoom.
		alias: alias, aliasCreator: creator,
	})
	if errors.Is(err, errAliasTaken) {
		return "", &mxerr.Error{Status: 400, Code: "M_ROOM_IN_USE", Message: "Room alias already taken"}
	}
	if err != nil {
		return "", fmt.Errorf("create room: %w", err)
	}
	if req.Visibility == "public" {
		if err := s.SetPublished(ctx, rs.roomID, true); err != nil {
			return "", err
		}
	}
	for _, u := range remoteInvites {
		content := map[string]any{}
		if req.IsDirect {
			content["is_direct"] = true
		}
		if err := s.inviteRemote(ctx, creator, rs.roomID, u, content); err != nil {
			return "", fmt.Errorf("invite %s to the new room %s: %w", u, rs.roomID, err)
		}
	}
	return rs.roomID, nil
}

// createTime returns the origin_server_ts of a new room's create event:
// now, but always later than the last one handed out. From room version 12
// the room ID is the create event's hash, so two rooms created by one user
// with the same create content in the same millisecond would otherwise get
// the same ID (and the second createRoom would fail).
func (s *Service) createTime() time.Time {
	for {
		last := s.lastCreateMS.Load()
		now := max(time.Now().UnixMilli(), last+1)
		if s.lastCreateMS.CompareAndSwap(last, now) {
			return time.UnixMilli(now)
		}
	}
}

func memberContent(membership, displayName, avatarURL, reason string, isDirect bool) map[string]any {
	c := map[string]any{"membership": membership}
	if displayName != "" {
		c["displayname"] = displayName
	}
	if avatarURL != "" {
		c["avatar_url"] = avatarURL
	}
	if reason != "" {
		c["reason"] = reason
	}
	if isDirect {
		c["is_direct"] = true
	}
	return c
}

const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

func randomAlnum(n int) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(alnum)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		b[i] = alnum[v.Int64()]
	}
	return string(b)
}

// videoRoomType is the m.room.create type of a video room (MSC3417).
const videoRoomType = "org.matrix.msc3417.call"
