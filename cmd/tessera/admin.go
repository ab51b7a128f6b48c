package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tessera-hs/tessera/admin"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/server"
)

// `tessera admin ...`: the jobs an operator does without a client, against
// a running server's admin API (-url and -token of a server admin) or, with
// -config, directly against the database of a stopped server.

const adminUsage = `usage: tessera admin COMMAND [-config FILE | -url URL -token TOKEN] ...
  reset-password     -user USER -password PW [-keep-devices]
  make-admin         -user USER [-revoke]
  deactivate         -user USER [-erase]
  delete-room        -room ROOM_ID [-block] [-no-purge] [-new-room-user USER] [-room-name NAME] [-message TEXT]
  purge-remote-media -older-than DURATION (e.g. 720h)
With -config the server must be stopped; a running server is reached with -url and -token.
`

// adminOps is what the commands need, from the database or over HTTP.
type adminOps interface {
	resetPassword(ctx context.Context, userID, password string, logout bool) error
	setAdmin(ctx context.Context, userID string, admin bool) error
	deactivate(ctx context.Context, userID string, erase bool) error
	deleteRoom(ctx context.Context, roomID string, req admin.DeleteRequest) (*admin.ShutdownResult, error)
	purgeRemoteMedia(ctx context.Context, before time.Time) (int, error)
	// userID makes a full user ID of a localpart (or returns a full one).
	userID(s string) (string, error)
	close()
}

func cmdAdmin(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageError{errors.New("admin: a command is required\n" + adminUsage)}
	}
	name, args := args[0], args[1:]
	fs := newFlags("admin "+name, stderr)
	cfgPath := fs.String("config", "", "config file of a stopped server, whose database is changed directly")
	apiURL := fs.String("url", "", "base URL of a running server")
	token := fs.String("token", "", "access token of a server admin (with -url)")
	user := fs.String("user", "", "user ID or localpart")
	password := fs.String("password", "", "new password")
	keep := fs.Bool("keep-devices", false, "reset-password: do not log the user's devices out")
	revoke := fs.Bool("revoke", false, "make-admin: take admin rights away instead")
	erase := fs.Bool("erase", false, "deactivate: erase the profile too")
	room := fs.String("room", "", "room ID")
	block := fs.Bool("block", false, "delete-room: block the room from being joined again")
	noPurge := fs.Bool("no-purge", false, "delete-room: keep the room's events in the database")
	newRoomUser := fs.String("new-room-user", "", "delete-room: create a room, as this user, to move members to")
	roomName := fs.String("room-name", "", "delete-room: the new room's name")
	message := fs.String("message", "", "delete-room: the message in the new room")
	olderThan := fs.Duration("older-than", 0, "purge-remote-media: cached remote media last accessed longer ago than this")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var need []string
	switch name {
	case "reset-password":
		need = []string{"user", "password"}
	case "make-admin", "deactivate":
		need = []string{"user"}
	case "delete-room":
		need = []string{"room"}
	case "purge-remote-media":
		if *olderThan <= 0 {
			return usageError{errors.New("admin purge-remote-media: -older-than is required")}
		}
	default:
		return usageError{fmt.Errorf("admin: unknown command %q\n%s", name, adminUsage)}
	}
	for _, f := range need {
		if fs.Lookup(f).Value.String() == "" {
			return usageError{fmt.Errorf("admin %s: -%s is required", name, f)}
		}
	}
	ctx := context.Background()
	var ops adminOps
	switch {
	case *apiURL != "" && *cfgPath == "":
		if *token == "" {
			return usageError{errors.New("admin: -url needs -token")}
		}
		ops = &apiAdmin{base: strings.TrimRight(*apiURL, "/"), token: *token, client: &http.Client{Timeout: 5 * time.Minute}}
	case *cfgPath != "" && *apiURL == "":
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			return err
		}
		if ops, err = openDBAdmin(ctx, cfg, stderr); err != nil {
			return err
		}
	default:
		return usageError{errors.New("admin: give either -config (stopped server) or -url and -token (running server)")}
	}
	defer ops.close()
	uid := func() (string, error) { return ops.userID(*user) }
	switch name {
	case "reset-password":
		id, err := uid()
		if err != nil {
			return err
		}
		if err := ops.resetPassword(ctx, id, *password, !*keep); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Reset the password of %s\n", id)
	case "make-admin":
		id, err := uid()
		if err != nil {
			return err
		}
		if err := ops.setAdmin(ctx, id, !*revoke); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s is %s\n", id, map[bool]string{true: "no longer a server admin", false: "a server admin"}[*revoke])
	case "deactivate":
		id, err := uid()
		if err != nil {
			return err
		}
		if err := ops.deactivate(ctx, id, *erase); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Deactivated %s\n", id)
	case "delete-room":
		req := admin.DeleteRequest{Block: *block, RoomName: *roomName, Message: *message}
		if *noPurge {
			f := false
			req.Purge = &f
		}
		if *newRoomUser != "" {
			id, err := ops.userID(*newRoomUser)
			if err != nil {
				return err
			}
			req.NewRoomUserID = id
		}
		res, err := ops.deleteRoom(ctx, *room, req)
		if err != nil {
			return err
		}
		out, _ := json.MarshalIndent(res, "", "  ")
		fmt.Fprintf(stdout, "Deleted %s\n%s\n", *room, out)
	case "purge-remote-media":
		n, err := ops.purgeRemoteMedia(ctx, time.Now().Add(-*olderThan))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Purged %d cached remote media\n", n)
	}
	return nil
}

// dbAdmin works on a stopped server's database, through the same domains
// the server runs.
type dbAdmin struct {
	srv *server.Server
	cfg *config.Config
}

func openDBAdmin(ctx context.Context, cfg *config.Config, stderr io.Writer) (*dbAdmin, error) {
	// Two processes on one database would each hold room state in memory
	// that the other changes behind its back.
	if conn, err := net.DialTimeout("tcp", cfg.Listen, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("admin: a server answers on %s; stop it, or use -url and -token", cfg.Listen)
	}
	// Info, so that the audit line of what the command does is shown.
	logCfg := cfg.Logging
	logCfg.Level = "info"
	srv, err := server.New(ctx, cfg, server.NewLogger(logCfg, stderr))
	if err != nil {
		return nil, err
	}
	return &dbAdmin{srv: srv, cfg: cfg}, nil
}

// cliActor names the command line as the actor in the audit log.
const cliActor = "tessera admin (command line)"

func (d *dbAdmin) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d.srv.Shutdown(ctx)
}

func (d *dbAdmin) userID(s string) (string, error) {
	if strings.HasPrefix(s, "@") {
		return s, nil
	}
	return "@" + s + ":" + d.cfg.ServerName, nil
}

func (d *dbAdmin) resetPassword(ctx context.Context, userID, password string, logout bool) error {
	return d.srv.Admin.ResetPassword(ctx, cliActor, userID, password, logout)
}

func (d *dbAdmin) setAdmin(ctx context.Context, userID string, admin bool) error {
	return d.srv.Admin.SetAdmin(ctx, cliActor, userID, admin)
}

func (d *dbAdmin) deactivate(ctx context.Context, userID string, erase bool) error {
	return d.srv.Admin.Deactivate(ctx, cliActor, userID, erase)
}

func (d *dbAdmin) deleteRoom(ctx context.Context, roomID string, req admin.DeleteRequest) (*admin.ShutdownResult, error) {
	st, err := d.srv.Admin.DeleteRoom(ctx, cliActor, roomID, req)
	if err != nil {
		return nil, err
	}
	if st.Status == admin.StatusFailed {
		return nil, fmt.Errorf("delete room: %s", st.Error)
	}
	return &st.ShutdownRoom, nil
}

func (d *dbAdmin) purgeRemoteMedia(ctx context.Context, before time.Time) (int, error) {
	return d.srv.Admin.PurgeRemoteMedia(ctx, cliActor, before)
}

// apiAdmin calls a running server's admin API.
type apiAdmin struct {
	base, token string
	client      *http.Client
}

func (a *apiAdmin) close() {}

func (a *apiAdmin) userID(s string) (string, error) {
	if !strings.HasPrefix(s, "@") {
		return "", usageError{fmt.Errorf("admin: with -url give a full user ID (@%s:server), not a localpart", s)}
	}
	return s, nil
}

// call sends one admin API request and decodes the answer into out.
func (a *apiAdmin) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Errcode, Error string }
		_ = json.Unmarshal(raw, &e)
		return fmt.Errorf("admin API: %s %s: %d %s: %s", method, path, resp.StatusCode, e.Errcode, e.Error)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("admin API: %s %s: %w", method, path, err)
		}
	}
	return nil
}

func (a *apiAdmin) resetPassword(ctx context.Context, userID, password string, logout bool) error {
	return a.call(ctx, http.MethodPost, "/_synapse/admin/v1/reset_password/"+url.PathEscape(userID),
		map[string]any{"new_password": password, "logout_devices": logout}, nil)
}

func (a *apiAdmin) setAdmin(ctx context.Context, userID string, admin bool) error {
	return a.call(ctx, http.MethodPut, "/_synapse/admin/v1/users/"+url.PathEscape(userID)+"/admin",
		map[string]any{"admin": admin}, nil)
}

func (a *apiAdmin) deactivate(ctx context.Context, userID string, erase bool) error {
	return a.call(ctx, http.MethodPost, "/_synapse/admin/v1/deactivate/"+url.PathEscape(userID),
		map[string]any{"erase": erase}, nil)
}

func (a *apiAdmin) deleteRoom(ctx context.Context, roomID string, req admin.DeleteRequest) (*admin.ShutdownResult, error) {
	var res admin.ShutdownResult
	if err := a.call(ctx, http.MethodDelete, "/_synapse/admin/v1/rooms/"+url.PathEscape(roomID), req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// purgeRemoteMedia calls Synapse's purge_media_cache, which a server that
// does not serve it answers 404 M_UNRECOGNIZED.
func (a *apiAdmin) purgeRemoteMedia(ctx context.Context, before time.Time) (int, error) {
	var res struct {
		Deleted int `json:"deleted"`
	}
	err := a.call(ctx, http.MethodPost, "/_synapse/admin/v1/purge_media_cache?before_ts="+fmt.Sprint(before.UnixMilli()), map[string]any{}, &res)
	return res.Deleted, err
}
