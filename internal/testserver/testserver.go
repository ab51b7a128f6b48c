// Package testserver starts a real Tessera for tests: the same wiring the
// binary uses, on 127.0.0.1:0, with a real SQLite file in a temp directory
// (or a fresh PostgreSQL database: see package dbtest).
// Tests drive it over HTTP with mautrix-go, a client library the Matrix
// world uses for bots and bridges.
package testserver

import (
	"context"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/server"
)

// SharedSecret is the registration shared secret of every test server.
const SharedSecret = "test-shared-secret"

// Server is a running test server.
type Server struct {
	URL    string
	Config *config.Config
	Log    *logrus.Logger
	// FederationURL is the https:// base URL of the federation listener
	// when the server runs with the Federation option.
	FederationURL string

	t       testing.TB
	srv     *server.Server
	done    chan error
	fedDone chan error
	addr    string
}

// Option adjusts the config before the server starts.
type Option func(*config.Config)

// Calls enables the embedded LiveKit SFU on free loopback ports, with
// node_ip 127.0.0.1 so that media stays on this machine.
func Calls() Option {
	return func(c *config.Config) {
		free := func(network string) int {
			if network == "udp" {
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					panic(err)
				}
				defer pc.Close()
				return pc.LocalAddr().(*net.UDPAddr).Port
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				panic(err)
			}
			defer l.Close()
			return l.Addr().(*net.TCPAddr).Port
		}
		c.Calls.Enabled = true
		c.Calls.SignalPort = free("tcp")
		c.Calls.TCPPort = free("tcp")
		c.Calls.UDPPort = free("udp")
		c.Calls.NodeIP = "127.0.0.1"
	}
}

// Federation enables federation on a TLS listener at ip (127.0.0.1,
// 127.0.0.2, 127.0.0.3, ...): Start binds ip:0 before the server starts,
// and the server name becomes that address, "IP:PORT", which other servers
// reach without DNS. Certificates are self-signed and not checked, so test
// servers trust each other. Restart keeps the address, so the name stays.
func Federation(ip string) Option {
	return func(c *config.Config) {
		c.ServerName = ip // replaced by IP:PORT once the port is known
		c.Federation.Enabled = true
		c.Federation.Listen = net.JoinHostPort(ip, "0")
		c.Federation.InsecureSkipTLSVerify = true
	}
}

// Start starts a server with test defaults: open registration, no rate
// limits, cheap password hashing. It is stopped when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.ServerName = "tessera.test"
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = dir
	cfg.Registration.Open = true
	cfg.Registration.SharedSecret = SharedSecret
	cfg.RateLimits.Enabled = false
	cfg.Passwords.HashMemoryKiB = 64
	cfg.Passwords.HashIterations = 1
	cfg.Logging.Level = "warn"
	// Shadow-banned requests answer at once (tests that time the delay
	// set it themselves).
	cfg.Moderation = config.Moderation{}
	usePostgres(t, &cfg)
	for _, o := range opts {
		o(&cfg)
	}
	// A federation listener on port 0 is bound now, so that the server
	// name can carry its port before the server starts.
	var fedListener net.Listener
	if _, port, err := net.SplitHostPort(cfg.Federation.Listen); cfg.Federation.Enabled && err == nil && port == "0" {
		l, err := net.Listen("tcp", cfg.Federation.Listen)
		if err != nil {
			t.Fatalf("federation listen: %v", err)
		}
		fedListener = l
		cfg.ServerName = l.Addr().String()
		cfg.Federation.Listen = cfg.ServerName
	}
	cfg.DataDir, _ = filepath.Abs(cfg.DataDir)
	if err := cfg.Finalize(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	if _, err := os.Stat(cfg.SigningKeyPath); os.IsNotExist(err) {
		writeKey(t, cfg.SigningKeyPath)
	}
	s := &Server{Config: &cfg, t: t}
	s.start(cfg.Listen, fedListener)
	t.Cleanup(func() { s.Stop() })
	return s
}

// start starts the server on addr, and its federation on fedListener (or
// on a fresh listener at the configured federation address when nil).
func (s *Server) start(addr string, fedListener net.Listener) {
	s.t.Helper()
	s.Log = server.NewLogger(s.Config.Logging, logWriter{s.t})
	srv, err := server.New(context.Background(), s.Config, s.Log)
	if err != nil {
		if fedListener != nil {
			fedListener.Close()
		}
		s.t.Fatalf("start server: %v", err)
	}
	if s.Config.Federation.Enabled && fedListener == nil {
		if fedListener, err = net.Listen("tcp", s.Config.Federation.Listen); err != nil {
			srv.Shutdown(context.Background())
			s.t.Fatalf("federation listen: %v", err)
		}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if fedListener != nil {
			fedListener.Close()
		}
		srv.Shutdown(context.Background())
		s.t.Fatalf("listen: %v", err)
	}
	s.srv, s.addr = srv, l.Addr().String()
	s.URL = "http://" + s.addr
	s.done = make(chan error, 1)
	go func() { s.done <- srv.Serve(l) }()
	s.fedDone = nil
	if fedListener != nil {
		s.FederationURL = "https://" + fedListener.Addr().String()
		s.fedDone = make(chan error, 1)
		go func() { s.fedDone <- srv.ServeFederation(fedListener) }()
	}
}

// Stop shuts the server down gracefully. Stopping twice is harmless.
func (s *Server) Stop() {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.t.Errorf("shutdown: %v", err)
	}
	if err := <-s.done; err != nil {
		s.t.Errorf("serve: %v", err)
	}
	if s.fedDone != nil {
		if err := <-s.fedDone; err != nil {
			s.t.Errorf("serve federation: %v", err)
		}
	}
	s.srv = nil
}

// Restart stops the server and starts it again on the same address with the
// same data directory (and the same federation address and server name).
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start(s.addr, nil)
}

// ServerName is the server's name, e.g. "127.0.0.2:34567" with the
// Federation option.
func (s *Server) ServerName() spec.ServerName { return spec.ServerName(s.Config.ServerName) }

// Server is the running server, for what tests need beyond HTTP (its
// FederationClient and KeyRing, its domains). It changes on Restart.
func (s *Server) Server() *server.Server { return s.srv }

// Client returns a mautrix client for this server, logged in with token if
// it is not empty.
func (s *Server) Client(userID id.UserID, token string) *mautrix.Client {
	s.t.Helper()
	c, err := mautrix.NewClient(s.URL, userID, token)
	if err != nil {
		s.t.Fatalf("mautrix client: %v", err)
	}
	c.Client = &http.Client{Timeout: 30 * time.Second}
	return c
}

// Register creates an account through /register (m.login.dummy) and returns
// a client logged in as it.
func (s *Server) Register(localpart, password string) *mautrix.Client {
	s.t.Helper()
	c := s.Client("", "")
	resp, err := c.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{
		Username: localpart, Password: password,
	})
	if err != nil {
		s.t.Fatalf("register %s: %v", localpart, err)
	}
	c.SetCredentials(resp.UserID, resp.AccessToken)
	c.DeviceID = resp.DeviceID
	return c
}

// MediaFiles counts the content files in the server's media store
// (uploads in progress left out).
func (s *Server) MediaFiles() int {
	s.t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(s.Config.DataDir, "media"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "tmp" {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			n++
		}
		return nil
	})
	if err != nil {
		s.t.Fatalf("walk media store: %v", err)
	}
	return n
}

// UserID is the full user ID of a localpart on this server.
func (s *Server) UserID(localpart string) id.UserID {
	return id.NewUserID(localpart, s.Config.ServerName)
}

func writeKey(t testing.TB, path string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "gen.yaml")
	cfg, err := config.Generate(config.GenerateOptions{
		ServerName: "tessera.test", DataDir: filepath.Dir(path), Listen: "127.0.0.1:0",
	}, out)
	if err != nil {
		t.Fatalf("generate signing key: %v", err)
	}
	if cfg.SigningKeyPath != path {
		t.Fatalf("signing key at %s, want %s", cfg.SigningKeyPath, path)
	}
}

// logWriter sends server logs to the test log, shown when a test fails.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

var _ io.Writer = logWriter{}
