package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Room aliases and the public room directory.
// https://spec.matrix.org/v1.19/client-server-api/#room-aliases

// validateAlias checks the alias grammar: #localpart:server, at most 255
// bytes.
// https://spec.matrix.org/v1.19/appendices/#room-aliases
func validateAlias(alias string) error {
	if len(alias) > 255 {
		return mxerr.InvalidParam("Room alias is longer than 255 bytes")
	}
	if !strings.HasPrefix(alias, "#") {
		return mxerr.InvalidParam("Room alias must start with '#'")
	}
	local, server, ok := strings.Cut(alias[1:], ":")
	if !ok || local == "" || server == "" || strings.ContainsAny(local, " \t\n") {
		return mxerr.InvalidParam("Invalid room alias %q", alias)
	}
	return nil
}

// ResolveAlias returns the room an alias points to, or "" if none. Aliases
// of other servers need federation and are not found. An unknown local
// alias in an application service's namespace is asked of the service,
// which may create it.
func (s *Service) ResolveAlias(ctx context.Context, alias string) (string, error) {
	if err := validateAlias(alias); err != nil {
		return "", err
	}
	roomID, err := s.storedAlias(ctx, alias)
	if err == nil && roomID == "" && s.queryAlias(ctx, alias) {
		return s.storedAlias(ctx, alias)
	}
	return roomID, err
}

// storedAlias is the room an alias points to here, or "", without asking
// the application services (room creation and canonical alias checks:
// their answer would have a service create what is being created).
func (s *Service) storedAlias(ctx context.Context, alias string) (string, error) {
	if err := validateAlias(alias); err != nil {
		return "", err
	}
	var roomID string
	err := s.db.QueryRowContext(ctx, `SELECT room_id FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID)
	if isNoRows(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("resolve alias: %w", err)
	}
	return roomID, nil
}

// AliasGuard refuses a user a new alias that is reserved (application
// services' exclusive namespaces); nil allows it.
type AliasGuard func(alias, userID string) error

// SetAliasGuard sets the check every new local alias passes. Called once
// at start.
func (s *Service) SetAliasGuard(g AliasGuard) { s.aliasGuard = g }

func (s *Service) checkAliasGuard(alias, userID string) error {
	if s.aliasGuard == nil {
		return nil
	}
	return s.aliasGuard(alias, userID)
}

// SetAlias creates a local alias. An alias that exists is 409 M_UNKNOWN,
// as the spec says.
func (s *Service) SetAlias(ctx context.Context, alias, roomID, creator string) error {
	if err := validateAlias(alias); err != nil {
		return err
	}
	if !s.isLocal(alias) {
		return mxerr.InvalidParam("Room alias must be on this server (%s)", s.cfg.ServerName)
	}
	if err := s.checkAliasGuard(alias, creator); err != nil {
		return err
	}
	if _, err := s.RoomVersion(ctx, roomID); err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)
		ON CONFLICT (alias) DO NOTHING`, alias, roomID, creator)
	if err != nil {
		return fmt.Errorf("set alias: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.Unknown(409, "Room alias %s already exists", alias)
	}
	return nil
}

// DeleteAlias removes a local alias. Its creator may, and so may anyone with
// the power to change the room's canonical alias, and server admins.
func (s *Service) DeleteAlias(ctx context.Context, alias, userID string, isAdmin bool) error {
	if err := validateAlias(alias); err != nil {
		return err
	}
	var roomID, creator string
	err := s.db.QueryRowContext(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	if isNoRows(err) {
		return mxerr.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return fmt.Errorf("delete alias: %w", err)
	}
	if creator != userID && !isAdmin {
		if err := s.checkStatePower(ctx, roomID, userID, "m.room.canonical_alias", "You may not delete this alias"); err != nil {
			return err
		}
	}
	_, err = s.db.ExecContext(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
	return err
}

// checkStatePower requires userID to be joined to the room with the power
// to send the given state event type.
func (s *Service) checkStatePower(ctx context.Context, roomID, userID, eventType, msg string) error {
	rs, err := s.currentState(ctx, roomID)
	if err != nil {
		return err
	}
	pl, err := powerLevels(rs)
	if err != nil {
		return err
	}
	if rs.membership(userID) != "join" || pl.UserLevel(spec.SenderID(userID)) < pl.EventLevel(eventType, true) {
		return mxerr.Forbidden("%s", msg)
	}
	return nil
}

// Aliases lists a room's local aliases.
func (s *Service) Aliases(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, fmt.Errorf("aliases: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// SetPublished adds a room to, or removes it from, the public directory.
func (s *Service) SetPublished(ctx context.Context, roomID string, published bool) error {
	res, err := s.db.ExecContext(ctx, `UPDATE rooms SET published = $1 WHERE room_id = $2`, published, roomID)
	if err != nil {
		return fmt.Errorf("publish room: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.NotFound("Unknown room")
	}
	return nil
}

// SetAppServiceListed adds a room to (or removes it from) the directory
// an application service keeps for one of its networks.
// https://spec.matrix.org/v1.19/application-service-api/#put_matrixclientv3directorylistappservicenetworkidroomid
func (s *Service) SetAppServiceListed(ctx context.Context, appServiceID, networkID, roomID string, listed bool) error {
	if _, err := s.RoomVersion(ctx, roomID); err != nil {
		return err
	}
	q := `DELETE FROM appservice_room_lists WHERE appservice_id = $1 AND network_id = $2 AND room_id = $3`
	if listed {
		q = `INSERT INTO appservice_room_lists (appservice_id, network_id, room_id) VALUES ($1, $2, $3)
			ON CONFLICT (appservice_id, network_id, room_id) DO NOTHING`
	}
	if _, err := s.db.ExecContext(ctx, q, appServiceID, networkID, roomID); err != nil {
		return fmt.Errorf("set the application service room list: %w", err)
	}
	return nil
}

// Published reports whether a room is in the public directory.
func (s *Service) Published(ctx context.Context, roomID string) (bool, error) {
	var p bool
	err := s.db.QueryRowContext(ctx, `SELECT published FROM rooms WHERE room_id = $1`, roomID).Scan(&p)
	if isNoRows(err) {
		return false, mxerr.NotFound("Unknown room")
	}
	return p, err
}

// CheckCanPublish allows a change to a room's directory visibility by a
// joined member who may set the canonical alias (as in Synapse), or an admin.
func (s *Service) CheckCanPublish(ctx context.Context, roomID, userID string, isAdmin bool) error {
	if isAdmin {
		_, err := s.RoomVersion(ctx, roomID)
		return err
	}
	return s.checkStatePower(ctx, roomID, userID, "m.room.canonical_alias", "You may not change this room's directory visibility")
}

// GuestsCanJoin reports whether the room's guest access lets guests in.
func (s *Service) GuestsCanJoin(ctx context.Context, roomID string) (bool, error) {
	rs, err := s.currentState(ctx, roomID)
	if err != nil {
		return false, err
	}
	ev := rs.get("m.room.guest_access", "")
	if ev == nil {
		return false, nil
	}
	var c struct {
		GuestAccess string `json:"guest_access"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	return c.GuestAccess == "can_join", nil
}
