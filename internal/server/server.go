// Package server wires the domains and edges into one HTTP server. The
// binary and the test harness both start Tessera through it, so tests run
// exactly what operators run.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/clientapi"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/signingkey"
	"github.com/tessera-hs/tessera/keybackup"
	"github.com/tessera-hs/tessera/keys"
	"github.com/tessera-hs/tessera/media"
	"github.com/tessera-hs/tessera/push"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/syncapi"
	"github.com/tessera-hs/tessera/users"
)

// Server is a running (or ready to run) Tessera.
type Server struct {
	cfg   *config.Config
	log   *logrus.Logger
	db    *database.DB
	key   *signingkey.Key
	Users *users.Service
	Rooms *roomserver.Service
	Sync  *syncapi.Service
	Push  *push.Service
	Keys  *keys.Service

	keyBackup *keybackup.Service

	notifier *syncapi.Notifier
	api      *clientapi.API
	handler  http.Handler
	http     *http.Server
}

// NewLogger builds the logger the config asks for, writing to w.
func NewLogger(cfg config.Logging, w io.Writer) *logrus.Logger {
	log := logrus.New()
	log.SetOutput(w)
	if cfg.Format == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	} else {
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	}
	lvl, err := logrus.ParseLevel(cfg.Level)
	if err != nil {
		lvl = logrus.InfoLevel
	}
	log.SetLevel(lvl)
	return log
}

// New opens the database, runs migrations and builds the HTTP handler.
func New(ctx context.Context, cfg *config.Config, log *logrus.Logger) (*Server, error) {
	key, err := signingkey.Load(cfg.SigningKeyPath)
	if err != nil {
		return nil, err
	}
	db, err := database.Open(cfg.Database.Path, database.Options{})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, db: db, key: key}
	if err := s.init(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) init(ctx context.Context) error {
	us, err := NewUsers(ctx, s.cfg, s.db)
	if err != nil {
		return err
	}
	s.Users = us
	rs, err := roomserver.New(ctx, s.db, roomserver.Config{
		ServerName: spec.ServerName(s.cfg.ServerName),
		KeyID:      s.key.ID,
		PrivateKey: s.key.PrivateKey,

		DefaultRoomVersion: gomatrixserverlib.RoomVersion(s.cfg.Rooms.DefaultRoomVersion),
	}, us, s.log)
	if err != nil {
		return err
	}
	s.Rooms = rs
	us.SetHooks(users.Hooks{
		ProfileChanged: func(ctx context.Context, userID string) {
			if err := rs.UpdateMemberProfile(ctx, userID); err != nil {
				s.log.WithError(err).WithField("user_id", userID).Error("updating member events after a profile change")
			}
		},
		AccountDataChanged: func(_ context.Context, userID string) { s.notifier.Wake(userID) },
		ReceiptsChanged: func(_ context.Context, roomID string) {
			if s.Push != nil {
				s.Push.ReceiptsChanged(roomID) // before the wake: woken syncs count afresh
			}
			s.notifier.WakeRoom(roomID)
		},
		DevicesDeleted: func(ctx context.Context, userID string, deviceIDs []string) {
			if err := s.Sync.ToDevice().DevicesDeleted(ctx, userID, deviceIDs); err != nil {
				s.log.WithError(err).WithField("user_id", userID).Error("dropping the to-device queues of deleted devices")
			}
			if err := s.Keys.DevicesDeleted(ctx, userID, deviceIDs); err != nil {
				s.log.WithError(err).WithField("user_id", userID).Error("deleting the keys of deleted devices")
			}
			if err := s.Push.DevicesDeleted(ctx, userID, deviceIDs); err != nil {
				s.log.WithError(err).WithField("user_id", userID).Error("deleting the pushers of deleted devices")
			}
		},
		Deactivated: func(ctx context.Context, userID string) {
			// Keys first, so that room-mates still hear of the change.
			if err := s.Keys.UserDeactivated(ctx, userID); err != nil {
				s.log.WithError(err).WithField("user_id", userID).Error("deleting cross-signing keys after deactivation")
			}
			if err := s.keyBackup.DeleteAllForUser(ctx, userID); err != nil {
				s.log.WithError(err).WithField("user_id", userID).Error("deleting key backups after deactivation")
			}
			if err := rs.LeaveAll(ctx, userID); err != nil {
				s.log.WithError(err).WithField("user_id", userID).Error("leaving rooms after deactivation")
			}
		},
	})
	s.notifier = syncapi.NewNotifier(s.log, rs.JoinedUsers)
	if s.Sync, err = syncapi.New(ctx, s.db, rs, us, s.notifier); err != nil {
		return err
	}
	if err := s.Sync.Presence().Start(ctx, s.cfg.Presence.Enabled); err != nil {
		return err
	}
	ps, err := push.New(ctx, s.db, push.Config{ServerName: spec.ServerName(s.cfg.ServerName)}, rs, us, s.notifier.Wake, s.log)
	if err != nil {
		return err
	}
	s.Push = ps
	s.Sync.SetUnreadCounter(ps)
	if s.Keys, err = keys.New(ctx, s.db, us, s.log); err != nil {
		return err
	}
	s.Sync.SetKeyStore(s.Keys)
	// A user's device list changed: wake them (their other devices) and
	// everyone who shares a room with them.
	s.Keys.SetChangeHook(func(ctx context.Context, userID string) {
		s.notifier.Wake(userID)
		rooms, err := rs.JoinedRooms(ctx, userID)
		if err != nil {
			s.log.WithError(err).WithField("user_id", userID).Error("waking syncs after a device list change")
			return
		}
		for _, roomID := range rooms {
			s.notifier.WakeRoom(roomID)
		}
	})
	if s.keyBackup, err = keybackup.New(ctx, s.db); err != nil {
		return err
	}
	api := clientapi.New(s.cfg, s.log, us, rs, s.Sync)
	api.SetPush(ps)
	api.SetKeys(s.Keys)
	api.SetKeyBackup(s.keyBackup)
	ms, err := media.New(ctx, s.db, media.Config{
		ServerName:        spec.ServerName(s.cfg.ServerName),
		Dir:               filepath.Join(s.cfg.DataDir, "media"),
		MaxUploadBytes:    s.cfg.Media.MaxUploadBytes,
		UnusedIDLifetime:  s.cfg.Media.UnusedMediaIDLifetime.Std(),
		MaxPendingPerUser: s.cfg.Media.MaxPendingUploadsPerUser,
		QuotaBytesPerUser: s.cfg.Media.QuotaBytesPerUser,
		LegacyCutoff:      s.cfg.Media.LegacyCutoff(),
	})
	if err != nil {
		return err
	}
	api.SetMedia(ms)

	r := mux.NewRouter().UseEncodedPath()
	api.Register(r)
	s.api = api
	r.NotFoundHandler = clientapi.NotFound(s.log)
	r.MethodNotAllowedHandler = clientapi.MethodNotAllowed(s.log)

	var h http.Handler = r
	// Media uploads get media.max_upload_bytes, the rest the JSON limit.
	h = clientapi.BodyLimit(s.cfg, h)
	h = httpx.CORS(h)
	h = httpx.Logging(s.log, h)
	s.handler = h
	return nil
}

// NewUsers builds the users domain from the config; the register-user
// command uses it without starting the server.
func NewUsers(ctx context.Context, cfg *config.Config, db *database.DB) (*users.Service, error) {
	return users.New(ctx, db, users.Config{
		ServerName:           spec.ServerName(cfg.ServerName),
		Passwords:            cfg.Passwords,
		AccessTokenLifetime:  cfg.Auth.AccessTokenLifetime.Std(),
		RefreshTokenLifetime: cfg.Auth.RefreshTokenLifetime.Std(),
		RegistrationTokens:   cfg.Registration.Tokens,
	})
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers requests on l until Shutdown. It returns nil after a
// graceful shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          nil,
	}
	s.log.WithFields(logrus.Fields{
		"server_name": s.cfg.ServerName,
		"address":     l.Addr().String(),
		"database":    s.db.Path(),
	}).Info("Tessera is listening")
	if err := s.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting requests, waits (up to ctx) for those in flight,
// and closes the database.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if s.Sync != nil {
		s.Sync.Stop() // long-polls answer now instead of at their timeout
	}
	if s.api != nil {
		// http.Server.Shutdown neither closes nor waits for WebSockets.
		s.api.CloseStreams(ctx)
	}
	if s.http != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
	}
	if s.Sync != nil {
		// No typing or presence timer fires once the database is closed.
		s.Sync.Typing().Stop()
		s.Sync.Presence().Stop()
	}
	if s.Rooms != nil {
		// After HTTP has drained: finish queued events, then close.
		s.Rooms.Close()
	}
	if s.Push != nil {
		// After the room server: evaluate what it handed over, then stop.
		s.Push.Close()
	}
	if s.notifier != nil {
		s.notifier.Close()
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close database: %w", err))
	}
	return errors.Join(errs...)
}

// Run listens on the configured address and serves until ctx ends, then
// shuts down gracefully.
func Run(ctx context.Context, cfg *config.Config, log *logrus.Logger) error {
	s, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		s.Shutdown(context.Background())
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(l) }()
	select {
	case err := <-errc:
		s.Shutdown(context.Background())
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout.Std())
	defer cancel()
	err = s.Shutdown(sctx)
	if err == nil {
		log.Info("shut down cleanly")
	}
	return err
}
