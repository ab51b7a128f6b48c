// Package calls is MatrixRTC: the embedded LiveKit SFU (built on Pion), the
// token service that exchanges Matrix OpenID tokens for LiveKit JWTs, and
// the reverse proxy that puts the SFU's signalling under the client
// listener. https://github.com/matrix-org/matrix-spec-proposals/pull/4195
package calls

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	lkconfig "github.com/livekit/livekit-server/pkg/config"
	"github.com/livekit/livekit-server/pkg/routing"
	"github.com/livekit/livekit-server/pkg/service"
	"github.com/livekit/livekit-server/pkg/telemetry/prometheus"
	"gopkg.in/yaml.v3"
)

// Config is what the SFU needs: where it listens and its API key pair.
type Config struct {
	// SignalPort is the loopback TCP port of LiveKit's HTTP/WebSocket
	// signalling (reverse-proxied under the client listener).
	SignalPort int
	// UDPPort is the single UDP port all WebRTC media is multiplexed on;
	// TCPPort the ICE/TCP fallback port.
	UDPPort int
	TCPPort int
	// NodeIP is the address advertised in ICE candidates. Empty: the
	// first non-loopback interface address (no STUN lookup).
	NodeIP string
	// APIKey and APISecret sign the JWTs the SFU accepts.
	APIKey    string
	APISecret string
	// LogLevel is LiveKit's own log level (debug, info, warn, error).
	LogLevel string
	// WebhookURL, if set, receives LiveKit's webhook events (the Guard).
	WebhookURL string
}

// SFU is the embedded LiveKit server.
type SFU struct {
	cfg    Config
	server *service.LivekitServer
	done   chan error
	stop   sync.Once
}

// liveKitYAML is the LiveKit configuration Tessera runs it with: single
// node, no Redis, signalling on loopback, one UDP mux port and one TCP
// port, no STUN, rooms created only through the API (the token service
// creates them for local users).
func liveKitYAML(c Config) ([]byte, error) {
	rtc := map[string]any{
		"udp_port":        c.UDPPort,
		"tcp_port":        c.TCPPort,
		"use_external_ip": false,
		"stun_servers":    []string{},
	}
	if c.NodeIP != "" {
		rtc["node_ip"] = c.NodeIP
		if ip := net.ParseIP(c.NodeIP); ip != nil && ip.IsLoopback() {
			// Tests and single-machine setups: loopback candidates only.
			rtc["enable_loopback_candidate"] = true
		}
	}
	level := c.LogLevel
	if level == "" {
		level = "warn"
	}
	conf := map[string]any{
		"port":           c.SignalPort,
		"bind_addresses": []string{"127.0.0.1"},
		"rtc":            rtc,
		"keys":           map[string]string{c.APIKey: c.APISecret},
		"room":           map[string]any{"auto_create": false},
		"logging":        map[string]any{"level": level},
	}
	if c.WebhookURL != "" {
		conf["webhook"] = map[string]any{"api_key": c.APIKey, "urls": []string{c.WebhookURL}}
	}
	return yaml.Marshal(conf)
}

// liveKitLogger sets LiveKit's logger once per process. The logger is a
// package global of LiveKit's, read without a lock by goroutines its
// metrics start and never stop (the CPU monitor), so setting it again
// when a second SFU starts in the same process (tests, a restart in
// place) is a data race. The first SFU's log level stays.
var liveKitLogger sync.Once

// StartSFU starts the embedded LiveKit server and returns once its
// signalling answers.
func StartSFU(ctx context.Context, c Config) (*SFU, error) {
	raw, err := liveKitYAML(c)
	if err != nil {
		return nil, err
	}
	conf, err := lkconfig.NewConfig(string(raw), true, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("calls: LiveKit config: %w", err)
	}
	liveKitLogger.Do(func() { lkconfig.InitLoggerFromConfig(&conf.Logging) })
	if err := conf.ValidateKeys(); err != nil {
		return nil, fmt.Errorf("calls: %w", err)
	}
	node, err := routing.NewLocalNode(conf)
	if err != nil {
		return nil, fmt.Errorf("calls: LiveKit node: %w", err)
	}
	if err := prometheus.Init(string(node.NodeID()), node.NodeType()); err != nil {
		return nil, fmt.Errorf("calls: LiveKit metrics: %w", err)
	}
	srv, err := service.InitializeServer(conf, node)
	if err != nil {
		return nil, fmt.Errorf("calls: LiveKit server: %w", err)
	}
	s := &SFU{cfg: c, server: srv, done: make(chan error, 1)}
	go func() { s.done <- srv.Start() }()
	health := "http://" + s.SignalAddr() + "/"
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-s.done:
			if err == nil {
				err = errors.New("stopped during start-up")
			}
			return nil, fmt.Errorf("calls: LiveKit: %w", err)
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if srv.IsRunning() {
			if resp, err := http.Get(health); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return s, nil
				}
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, errors.New("calls: LiveKit did not start within 15s")
		}
	}
}

// SignalAddr is the loopback host:port of LiveKit's signalling.
func (s *SFU) SignalAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.cfg.SignalPort))
}

// Stop disconnects everyone and stops the server.
func (s *SFU) Stop() {
	s.stop.Do(func() {
		s.server.Stop(true)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
		}
	})
}

// KeysFile is where a generated API key pair is kept, under the data
// directory.
const KeysFile = "livekit.keys"

// LoadOrCreateKeys returns the key pair kept in dir, creating it (owner
// readable only) on first use.
func LoadOrCreateKeys(dir string, generate func() (string, string)) (key, secret string, err error) {
	path := filepath.Join(dir, KeysFile)
	raw, err := os.ReadFile(path)
	if err == nil {
		var k struct{ Key, Secret string }
		if err := json.Unmarshal(raw, &k); err != nil || k.Key == "" || k.Secret == "" {
			return "", "", fmt.Errorf("calls: %s is not a valid key file", path)
		}
		return k.Key, k.Secret, nil
	}
	if !os.IsNotExist(err) {
		return "", "", fmt.Errorf("calls: %w", err)
	}
	key, secret = generate()
	raw, _ = json.Marshal(struct{ Key, Secret string }{key, secret})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("calls: %w", err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return "", "", fmt.Errorf("calls: %w", err)
	}
	return key, secret, nil
}
