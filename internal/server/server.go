// Package server wires the domains and edges into one HTTP server. The
// binary and the test harness both start Tessera through it, so tests run
// exactly what operators run.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/admin"
	"github.com/tessera-hs/tessera/appservice"
	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/clientapi"
	"github.com/tessera-hs/tessera/delayed"
	"github.com/tessera-hs/tessera/federation"
	"github.com/tessera-hs/tessera/federation/keyring"
	"github.com/tessera-hs/tessera/federation/queue"
	"github.com/tessera-hs/tessera/housekeeping"
	"github.com/tessera-hs/tessera/internal/cluster"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/ratelimit"
	"github.com/tessera-hs/tessera/internal/signingkey"
	"github.com/tessera-hs/tessera/internal/tlscert"
	"github.com/tessera-hs/tessera/keybackup"
	"github.com/tessera-hs/tessera/keys"
	"github.com/tessera-hs/tessera/media"
	"github.com/tessera-hs/tessera/notices"
	"github.com/tessera-hs/tessera/oauth"
	"github.com/tessera-hs/tessera/push"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/slidingsync"
	"github.com/tessera-hs/tessera/syncapi"
	"github.com/tessera-hs/tessera/users"
	"github.com/tessera-hs/tessera/web"
	"github.com/tessera-hs/tessera/webhooks"
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
	// Housekeeping runs retention, pruning and admin purges.
	Housekeeping *housekeeping.Service

	keyBackup *keybackup.Service
	// delayed sends MSC4140 delayed events when they fall due.
	delayed *delayed.Service
	// sliding is simplified sliding sync (MSC4186).
	sliding *slidingsync.Service
	// webhooks are the built-in incoming webhooks; nil when off.
	webhooks *webhooks.Service
	// oauth is the OAuth 2.0 API's authorisation server; nil when off.
	oauth *oauth.Service
	// Admin is the server admin domain (/_synapse/admin, tessera admin).
	Admin *admin.Service
	// appServices are the registered application services (none: empty).
	appServices *appservice.Set
	// asPush pushes events to them (appservices.go).
	asPush *appservice.Service

	// FederationClient makes requests to other servers, signed with our
	// key; KeyRing holds other servers' keys and verifies their
	// signatures. Both are nil when federation is off.
	FederationClient fclient.FederationClient
	KeyRing          *keyring.KeyRing
	// fedAPI is the federation edge and fedHTTP its TLS server (see
	// ServeFederation); nil when federation is off.
	fedAPI  *federation.API
	fedHTTP *http.Server
	// fedQueue holds what goes out to other servers (fedrooms.go);
	// closing fedStop stops the presence sender.
	fedQueue *queue.Queue
	fedStop  chan struct{}

	// sfu is the embedded LiveKit server and calls its token service;
	// nil when calls are off.
	sfu *calls.SFU
	// guard removes users who leave a Matrix room from its calls.
	guard *calls.Guard
	calls *calls.Service
	// delegations keeps MSC4195 delegated delayed leaves alive while
	// their participants are on the SFU; nil when calls are off.
	delegations *calls.Delegations

	notifier *syncapi.Notifier
	// cluster is the instance map of a deployment of several processes
	// (docs/scaling.md); nil for one.
	cluster *cluster.Map
	bus     *cluster.Bus // the cluster's invalidations; nil for one process
	api     *clientapi.API
	handler http.Handler
	http    *http.Server
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
	// Application services first: a bad registration stops the start
	// before anything is opened.
	regs, err := appservice.LoadRegistrations(cfg.AppServices)
	if err != nil {
		return nil, err
	}
	if cfg.Webhooks.Enabled {
		// The webhooks bot's user ID is reserved like an exclusive
		// namespace, so that no one can register it.
		regs = append(regs, webhooks.Registration(cfg.Webhooks, cfg.ServerName))
	}
	appServices, err := appservice.NewSet(cfg.ServerName, regs)
	if err != nil {
		return nil, err
	}
	key, err := signingkey.Load(cfg.SigningKeyPath)
	if err != nil {
		return nil, err
	}
	db, err := OpenDatabase(ctx, cfg.Database)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, db: db, key: key, appServices: appServices}
	if s.cluster, err = cluster.New(cfg); err != nil {
		db.Close()
		return nil, err
	}
	if s.cluster != nil {
		// Before the domains, which register their handlers on it;
		// it starts listening once they are all built.
		s.bus = s.cluster.NewBus(db, log)
	}
	if err := s.init(ctx); err != nil {
		if s.guard != nil {
			s.guard.Close()
		}
		if s.sfu != nil {
			s.sfu.Stop()
		}
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
	// The application services act as users: their senders must exist.
	us.SetAppServices(s.appServices)
	if err := us.EnsureAppServiceSenders(ctx); err != nil {
		return err
	}
	rs, err := roomserver.New(ctx, s.db, roomserver.Config{
		ServerName: spec.ServerName(s.cfg.ServerName),
		KeyID:      s.key.ID,
		PrivateKey: s.key.PrivateKey,

		DefaultRoomVersion: gomatrixserverlib.RoomVersion(s.cfg.Rooms.DefaultRoomVersion),
		Retention:          retentionConfig(s.cfg.Housekeeping.Retention),
		Cluster:            roomCluster(s.cluster),
	}, us, s.log)
	if err != nil {
		return err
	}
	s.Rooms = rs
	// Aliases in an application service's exclusive namespace are its own.
	rs.SetAliasGuard(s.appServices.CheckNewAlias)
	us.SetHooks(users.Hooks{
		ProfileChanged: func(ctx context.Context, userID string) {
			if err := rs.UpdateMemberProfile(ctx, userID); err != nil {
				s.log.WithError(err).WithField("user_id", userID).Error("updating member events after a profile change")
			}
		},
		AccountDataChanged: func(_ context.Context, userID string) {
			s.notifier.Wake(userID)
			if s.Push != nil {
				// Read receipts and markers come with this too: badges follow.
				s.Push.ReadMaybeChanged(userID)
			}
		},
		ReceiptsChanged: func(_ context.Context, roomID string) {
			if s.Push != nil {
				s.Push.ReceiptsChanged(roomID) // before the wake: woken syncs count afresh
			}
			s.notifier.WakeRoom(roomID)
			if s.asPush != nil {
				s.asPush.ReceiptsChanged(roomID)
			}
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
			if s.oauth != nil {
				if err := s.oauth.DevicesDeleted(ctx, userID, deviceIDs); err != nil {
					s.log.WithError(err).WithField("user_id", userID).Error("forgetting the OAuth grants of deleted devices")
				}
			}
			if s.sliding != nil {
				if err := s.sliding.DevicesDeleted(ctx, userID, deviceIDs); err != nil {
					s.log.WithError(err).WithField("user_id", userID).Error("dropping the sliding sync connections of deleted devices")
				}
			}
		},
		PresenceChangedElsewhere: func(ctx context.Context, userID string) {
			s.Sync.Presence().ChangedElsewhere(ctx, userID)
			// The services this process pushes to (the publishing
			// process told those it pushes to).
			s.presenceToAppServices(userID)
		},
		TokensRevoked: func(userID string) {
			// s.api is set before the server serves, and tokens are
			// revoked only by requests.
			if s.api != nil {
				s.api.TokensRevoked(userID)
			}
			s.publishTokensRevoked(userID)
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
	pc := s.cfg.Push
	ps, err := push.New(ctx, s.db, push.Config{ServerName: spec.ServerName(s.cfg.ServerName), Delivery: push.DeliveryConfig{
		IncludeContent: pc.IncludeContent, GroupUnreadCountByRoom: pc.GroupUnreadCountByRoom, Timeout: pc.Timeout.Std(),
		InitialBackoff: pc.InitialBackoff.Std(), MaxBackoff: pc.MaxBackoff.Std(), GiveUpAfter: pc.GiveUpAfter.Std(),
		DisableAfter: pc.DisableAfter.Std(), IPRangeBlacklist: pc.IPRangeBlacklist, IPRangeWhitelist: pc.IPRangeWhitelist,
	}, Email: push.EmailConfig{SMTPHost: pc.Email.SMTPHost, SMTPPort: pc.Email.SMTPPort, TLS: pc.Email.TLS,
		TLSName: pc.Email.TLSName, CAFile: pc.Email.CAFile, InsecureSkipVerify: pc.Email.InsecureSkipVerify,
		AllowPlaintext: pc.Email.AllowPlaintext, Username: pc.Email.Username, Password: pc.Email.Password, From: pc.Email.From, AppName: pc.Email.AppName,
		Delay: pc.Email.Delay.Std(), PublicBaseURL: s.cfg.PublicBaseURL,
	}, Cluster: s.pushCluster()}, s.pushRooms(), us, s.notifier.Wake, s.log)
	if err != nil {
		return err
	}
	s.Push = ps
	s.pushRulesCluster()
	s.Sync.SetUnreadCounter(ps)
	s.Sync.SetPushRules(ps)
	if s.Keys, err = keys.New(ctx, s.db, us, s.log); err != nil {
		return err
	}
	s.Sync.SetKeyStore(s.Keys)
	// A user's device list changed: wake them (their other devices) and
	// everyone who shares a room with them.
	s.Keys.SetChangeHook(func(ctx context.Context, userID string) {
		s.notifier.Wake(userID)
		if s.asPush != nil {
			s.asPush.DeviceListChanged(userID)
		}
		rooms, err := rs.JoinedRooms(ctx, userID)
		if err != nil {
			s.log.WithError(err).WithField("user_id", userID).Error("waking syncs after a device list change")
			return
		}
		for _, roomID := range rooms {
			s.notifier.WakeRoom(roomID)
		}
	})
	if err := s.streamsCluster(ctx); err != nil {
		return err
	}
	s.Keys.SetClaimHook(func(_ context.Context, claimed map[string][]string) {
		if s.asPush != nil {
			s.asPush.KeysClaimed(claimed)
		}
	})
	if s.keyBackup, err = keybackup.New(ctx, s.db); err != nil {
		return err
	}
	if err := s.initAppServices(ctx); err != nil {
		return err
	}
	api := clientapi.New(s.cfg, s.log, us, rs, s.Sync)
	api.SetPush(ps)
	api.SetKeys(s.Keys)
	api.SetKeyBackup(s.keyBackup)
	if s.delayed, err = delayed.New(ctx, s.db, s.roomsFor(), s.delayedConfig(),
		s.log.WithField("component", "delayed")); err != nil {
		return err
	}
	api.SetDelayed(s.delayed)
	if s.sliding, err = slidingsync.New(ctx, s.db, s.log.WithField("component", "slidingsync"), rs, us, s.Sync); err != nil {
		return err
	}
	api.SetSlidingSync(s.sliding)
	ns, err := notices.New(ctx, s.db, s.roomsFor(), us, spec.ServerName(s.cfg.ServerName), s.cfg.ServerNotices,
		s.log.WithField("component", "notices"))
	if err != nil {
		return err
	}
	api.SetNotices(ns)
	if oc := s.cfg.Auth.OAuth; oc.Enabled {
		if s.oauth, err = oauth.New(ctx, s.db, us, oauth.Config{
			CodeLifetime: oc.CodeLifetime.Std(), DeviceCodeLifetime: oc.DeviceCodeLifetime.Std(),
			DeviceCodeInterval: oc.DeviceCodeInterval.Std(), SessionLifetime: oc.SessionLifetime.Std(),
		}); err != nil {
			return err
		}
		api.SetOAuth(s.oauth)
	}
	if s.Admin, err = admin.New(ctx, s.db, us, rs, s.log.WithField("component", "admin")); err != nil {
		return err
	}
	rs.SetJoinGuard(s.Admin.CheckJoin)
	api.SetAdmin(s.Admin)
	if s.cfg.Webhooks.Enabled {
		if s.webhooks, err = webhooks.New(ctx, s.db, s.roomsFor(), us, spec.ServerName(s.cfg.ServerName), s.cfg.PublicBaseURL,
			s.cfg.Webhooks, s.log.WithField("component", "webhooks")); err != nil {
			return err
		}
		s.webhooks.Start()
		api.SetWebhooks(s.webhooks)
	}
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
	s.initHousekeeping(api, ms)
	s.Admin.SetMedia(ms)
	s.addRoomPurgers(ns)

	s.api = api
	if s.cfg.Federation.Enabled {
		if err := s.initFederation(ctx); err != nil {
			return err
		}
		if err := s.startFederationRooms(ctx, s.fedAPI, s.FederationClient, s.KeyRing.KeyRing); err != nil {
			return err
		}
		s.Admin.SetDestinations(s.fedQueue)
		// Our media to other servers, and theirs to our users. fclient's
		// client has DoHTTPRequest, which its interface leaves out.
		s.fedAPI.SetMedia(ms)
		s.Rooms.SetHistoryFetcher(s.fedAPI)
		s.Rooms.SetHierarchyFetcher(s.fedAPI)
		if fc, ok := s.FederationClient.(media.FederationClient); ok {
			ms.SetFederation(fc, func(n spec.ServerName) bool { return s.cfg.Federation.AllowsServer(string(n)) },
				s.log.WithField("component", "media"))
		}
	}

	if s.cfg.Calls.Enabled {
		if err := s.initCalls(ctx); err != nil {
			return err
		}
		api.SetCalls(s.calls)
		// After the delayed events service, whose events it restarts
		// and sends, and the SFU, which it watches.
		s.delegations = calls.NewDelegations(calls.DelegationConfig{
			APIKey: s.calls.APIKey, APISecret: s.calls.APISecret, SignalAddr: s.calls.SignalAddr,
			PollInterval:   s.cfg.Calls.DelegatedLeavePollInterval.Std(),
			ConnectTimeout: s.cfg.Calls.DelegatedLeaveConnectTimeout.Std(),
		}, s.delayed, s.log.WithField("component", "calls"))
		api.SetDelegations(s.delegations)
		s.calls.Delegations = s.delegations
	}

	if s.fedAPI != nil {
		// Tokens for other servers' SFUs, even without one of our own.
		api.SetRTCRemote(s.fedAPI.RemoteLiveKitToken)
	}

	r := mux.NewRouter().UseEncodedPath()
	api.Register(r)
	s.registerInternal(r)
	if s.calls != nil {
		r.PathPrefix(calls.ProxyPrefix + "/").Handler(s.calls.Handler())
	}
	if s.fedAPI != nil {
		// Our keys on the client listener too, for servers that reach
		// us through a reverse proxy in front of it.
		s.fedAPI.RegisterServerKeys(r)
		if w := s.cfg.Federation.WellKnownServer; w != "" {
			federation.RegisterWellKnown(r, w)
		}
	}
	if s.cfg.Web.Enabled {
		// The web client, last: it only matches its own files, so the
		// APIs and their 404 M_UNRECOGNIZED stay as they are.
		client, err := web.New(s.cfg.Web.Path)
		if err != nil {
			return err
		}
		r.MatcherFunc(func(req *http.Request, _ *mux.RouteMatch) bool { return client.Match(req) }).Handler(client)
	}
	s.api = api
	r.NotFoundHandler = httpx.NotFoundOr405(r, clientapi.NotFound(s.log), clientapi.MethodNotAllowed(s.log))
	r.MethodNotAllowedHandler = clientapi.MethodNotAllowed(s.log)

	var h http.Handler = s.clusterHandler(r)
	// Media uploads get media.max_upload_bytes, the rest the JSON limit.
	h = clientapi.BodyLimit(s.cfg, h)
	h = httpx.UTF8Params(h)
	h = httpx.BodyDeadline(s.cfg.HTTP.BodyTimeout.Std(), s.cfg.HTTP.BodyMinRate, h)
	h = httpx.CORS(h)
	h = httpx.Logging(s.log, h)
	s.handler = h
	// Built here rather than in Serve, so that Shutdown, which may run
	// while Serve starts in another goroutine, reads it without a race.
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
	}
	// Last, so that a failed start leaves no timer running: events that
	// fell due while the server was down go out now.
	if err := s.delayed.Start(ctx); err != nil {
		return err
	}
	// What application services missed while the server was down (and
	// the transaction that was being delivered) goes out now.
	s.asPush.Start()
	s.startCluster()
	return nil
}

// userInfoLooker is fclient's client, whose interface leaves out
// LookupUserInfo.
type userInfoLooker interface {
	LookupUserInfo(ctx context.Context, s spec.ServerName, token string) (fclient.UserInfo, error)
}

// initCalls starts the embedded SFU and builds the token service.
func (s *Server) initCalls(ctx context.Context) error {
	cc := s.cfg.Calls
	key, secret := cc.APIKey, cc.APISecret
	if key == "" {
		var err error
		if key, secret, err = calls.LoadOrCreateKeys(s.cfg.DataDir, config.RandomLiveKitKeys); err != nil {
			return err
		}
	}
	level := s.cfg.Logging.Level
	if level == "info" {
		level = "warn" // LiveKit is chatty at info
	}
	guard, err := calls.NewGuard(ctx, s.db, s.Rooms, key, secret, s.log.WithField("component", "calls"))
	if err != nil {
		return err
	}
	s.guard = guard
	sfu, err := calls.StartSFU(ctx, calls.Config{
		SignalPort: cc.SignalPort, UDPPort: cc.UDPPort, TCPPort: cc.TCPPort, NodeIP: cc.NodeIP,
		APIKey: key, APISecret: secret, LogLevel: level, WebhookURL: guard.WebhookURL(),
	})
	if err != nil {
		return err
	}
	s.sfu = sfu
	guard.Attach(sfu.SignalAddr(), key, secret)
	// Every process's SFU has its own participants: each guard hears
	// every leave of the deployment (one process: the same).
	s.Rooms.SubscribeAll(guard.OnEvents)
	s.calls = &calls.Service{
		ServerName:    s.cfg.ServerName,
		PublicBaseURL: s.cfg.PublicBaseURL,
		APIKey:        key,
		APISecret:     secret,
		Users:         s.Users,
		Rooms:         s.Rooms,
		SignalAddr:    sfu.SignalAddr(),
		Guard:         guard,
		Log:           s.log.WithField("component", "calls"),
		// Behind a reverse proxy, as for the client API's limits.
		TrustForwardedFor: s.cfg.HTTP.TrustForwardedFor,
		Remote: func(ctx context.Context, server, token string) (string, error) {
			fc, ok := s.FederationClient.(userInfoLooker)
			if !ok || !s.cfg.Federation.AllowsServer(server) {
				return "", errors.New("federation is off or the server is not allowed")
			}
			info, err := fc.LookupUserInfo(ctx, spec.ServerName(server), token)
			if err != nil {
				return "", err
			}
			return info.Sub, nil
		},
	}
	if rl := s.cfg.RateLimits; rl.Enabled {
		s.calls.Limiter = ratelimit.New(rl.CallTokens.PerSecond, rl.CallTokens.Burst)
	}
	if s.fedAPI != nil {
		s.fedAPI.SetCalls(s.calls)
	}
	s.log.WithFields(logrus.Fields{"signal": sfu.SignalAddr(), "udp_port": cc.UDPPort, "tcp_port": cc.TCPPort}).
		Info("calls: embedded LiveKit SFU started")
	return nil
}

// federationTimeout bounds one outbound federation request.
const federationTimeout = 30 * time.Second

// initFederation builds the server-server side: the TLS certificate, the
// signed federation client, the key ring and the federation edge.
func (s *Server) initFederation(ctx context.Context) error {
	fc := s.cfg.Federation
	name := spec.ServerName(s.cfg.ServerName)
	tlsConfig, err := s.federationTLS()
	if err != nil {
		return err
	}
	if fc.InsecureSkipTLSVerify {
		s.log.Warn("INSECURE: federation.insecure_skip_tls_verify is on: this server accepts any TLS certificate " +
			"from other servers, so anyone on the path can read and change federation traffic. For test networks only.")
	}
	allowed := func(n spec.ServerName) bool { return fc.AllowsServer(string(n)) }
	// A server name with an explicit port needs no DNS: fclient's
	// resolver (ResolveServer in fclient/resolve.go, steps 1 and 2 of the
	// spec's server name resolution) sends requests for an IP literal with
	// a port, such as the test harness's "127.0.0.2:34567", straight to
	// that address with the IP as TLS server name (no SNI), and for a host
	// name with a port straight to that host and port, without looking up
	// .well-known or SRV records.
	s.FederationClient = fclient.NewFederationClient(
		[]*fclient.SigningIdentity{{ServerName: name, KeyID: s.key.ID, PrivateKey: s.key.PrivateKey}},
		fclient.WithSkipVerify(fc.InsecureSkipTLSVerify),
		fclient.WithTimeout(federationTimeout),
		fclient.WithKeepAlives(true),
		// Server discovery: .well-known/matrix/server, then SRV records
		// (_matrix-fed._tcp, then _matrix._tcp), then port 8448. Off,
		// fclient would connect to port 443 of the bare server name.
		fclient.WithWellKnownSRVLookups(true),
		fclient.WithUserAgent("Tessera"),
	)
	trusted := make([]keyring.TrustedKeyServer, 0, len(fc.TrustedKeyServers))
	for _, t := range fc.TrustedKeyServers {
		ts, err := keyring.NewTrustedKeyServer(t.ServerName, t.VerifyKeys)
		if err != nil {
			return fmt.Errorf("federation.trusted_key_servers: %w", err)
		}
		trusted = append(trusted, ts)
	}
	s.KeyRing, err = keyring.New(ctx, s.db, keyring.Config{
		ServerName:        name,
		KeyID:             s.key.ID,
		PublicKey:         s.key.PrivateKey.Public().(ed25519.PublicKey),
		KeyValidity:       fc.KeyValidity.Std(),
		TrustedKeyServers: trusted,
		Allowed:           allowed,
	}, s.FederationClient, s.log.WithField("component", "keyring"))
	if err != nil {
		return err
	}
	s.fedAPI = federation.New(federation.Config{
		ServerName:  name,
		KeyID:       s.key.ID,
		PrivateKey:  s.key.PrivateKey,
		KeyValidity: fc.KeyValidity.Std(),
		Allowed:     allowed,
		Cluster:     s.fedCluster(),
	}, s.log, s.KeyRing, s.FederationClient, s.Rooms, s.Users)
	s.fedHTTP = &http.Server{
		Handler:           httpx.BodyDeadline(s.cfg.HTTP.BodyTimeout.Std(), s.cfg.HTTP.BodyMinRate, s.fedHandler()),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		// HTTP/1.1 only, as Synapse serves federation. With HTTP/2 a
		// graceful shutdown waits up to a second for each peer to
		// close its connection after GOAWAY, which peers that keep
		// connections alive (gomatrixserverlib's client) do not do.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	return nil
}

// federationTLS loads the configured certificate, or the self-signed one
// in the data directory, warning that other servers will refuse it.
func (s *Server) federationTLS() (*tls.Config, error) {
	fc := s.cfg.Federation
	if fc.TLSCert != "" {
		return tlscert.Load(fc.TLSCert, fc.TLSKey)
	}
	cfg, generated, err := tlscert.LoadOrGenerate(s.cfg.DataDir, s.cfg.ServerName, time.Now())
	if err != nil {
		return nil, err
	}
	log := s.log.WithField("certificate", filepath.Join(s.cfg.DataDir, tlscert.CertFile))
	if generated {
		log.Warn("SELF-SIGNED: generated a self-signed TLS certificate for federation. Other servers refuse it " +
			"unless they skip certificate checks: set federation.tls_cert and tls_key to a real certificate.")
	} else {
		log.Warn("SELF-SIGNED: federation uses a self-signed TLS certificate, which other servers refuse " +
			"unless they skip certificate checks: set federation.tls_cert and tls_key to a real certificate.")
	}
	return cfg, nil
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
	s.log.WithFields(logrus.Fields{
		"server_name": s.cfg.ServerName,
		"address":     l.Addr().String(),
		"database":    describeDatabase(s.cfg.Database),
	}).Info("Tessera is listening")
	if err := s.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// ServeFederation answers federation requests over TLS on l until
// Shutdown. It returns nil after a graceful shutdown, and an error when
// federation is off.
func (s *Server) ServeFederation(l net.Listener) error {
	if s.fedHTTP == nil {
		return errors.New("serve federation: federation is not enabled")
	}
	s.log.WithFields(logrus.Fields{
		"server_name": s.cfg.ServerName,
		"address":     l.Addr().String(),
	}).Info("Tessera is listening for federation")
	if err := s.fedHTTP.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve federation: %w", err)
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
	if s.fedHTTP != nil {
		if err := s.fedHTTP.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("federation shutdown: %w", err))
		}
	}
	if s.Sync != nil {
		// No typing or presence timer fires once the database is closed.
		s.Sync.Typing().Stop()
		s.Sync.Presence().Stop()
	}
	if s.Admin != nil {
		// After HTTP: room deletions in progress end before the database
		// closes.
		s.Admin.Close()
	}
	if s.sliding != nil {
		// After HTTP: write what answered requests recorded.
		s.sliding.Close()
	}
	if s.delegations != nil {
		// After HTTP (no new delegations), before the delayed events
		// it restarts and sends, and before the SFU: the SFU stopping
		// would look like every participant leaving. What it kept alive
		// stays scheduled.
		s.delegations.Close()
	}
	if s.webhooks != nil {
		// Before the room server: the bot sends through it.
		s.webhooks.Close()
	}
	if s.delayed != nil {
		// Before the room server, which sends what falls due.
		s.delayed.Stop()
	}
	if s.Housekeeping != nil {
		// Before the room server: running purges stop at their batch.
		s.Housekeeping.Close()
	}
	if s.bus != nil {
		s.bus.Stop()
	}
	if s.Rooms != nil {
		// After HTTP has drained: finish queued events, then close.
		s.Rooms.Close()
	}
	if s.Push != nil {
		// After the room server: evaluate what it handed over, then stop.
		s.Push.Close()
	}
	if s.asPush != nil {
		// After the room server; what is unsent is read again at the
		// next start.
		s.asPush.Close()
	}
	if s.fedStop != nil {
		close(s.fedStop)
	}
	if s.fedQueue != nil {
		// After the room server, which queues in its commits: stop
		// sending (the queue keeps what is unsent for the next start).
		s.fedQueue.Close()
	}
	if s.notifier != nil {
		s.notifier.Close()
	}
	if s.guard != nil {
		// Before the SFU, whose departures it need not hear of.
		s.guard.Close()
	}
	if s.sfu != nil {
		s.sfu.Stop()
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
	errc := make(chan error, 2)
	go func() { errc <- s.Serve(l) }()
	if cfg.Federation.Enabled {
		fl, err := net.Listen("tcp", cfg.Federation.Listen)
		if err != nil {
			l.Close()
			s.Shutdown(context.Background())
			return fmt.Errorf("listen for federation on %s: %w", cfg.Federation.Listen, err)
		}
		go func() { errc <- s.ServeFederation(fl) }()
	}
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
