package push

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/tessera-hs/tessera/internal/tlscert"
)

// relay is a real SMTP server (go-smtp) on loopback, with the test
// certificate of internal/tlscert, that records how each mail came.
type relay struct {
	port   int
	caFile string // the certificate, as a CA file that trusts it
	mu     sync.Mutex
	mails  []relayedMail
}

type relayedMail struct {
	to         []string
	tls        bool   // the session was encrypted when the mail came
	user, pass string // what AUTH PLAIN gave
}

// relayMode is how the test relay speaks TLS.
type relayMode int

const (
	relayStartTLS relayMode = iota // offers STARTTLS
	relayImplicit                  // TLS from the first byte (port 465)
	relayPlain                     // no TLS at all
)

func startRelay(t *testing.T, mode relayMode) *relay {
	t.Helper()
	dir := t.TempDir()
	certCfg, _, err := tlscert.LoadOrGenerate(dir, "127.0.0.1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{caFile: filepath.Join(dir, tlscert.CertFile)}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &relaySession{r: r, c: c}, nil
	}))
	s.Domain = "localhost"
	s.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	s.AllowInsecureAuth = mode == relayPlain
	var l net.Listener
	switch mode {
	case relayStartTLS:
		s.TLSConfig = certCfg
		l, err = net.Listen("tcp", "127.0.0.1:0")
	case relayImplicit:
		s.TLSConfig = certCfg
		l, err = tls.Listen("tcp", "127.0.0.1:0", certCfg)
	case relayPlain:
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	r.port = l.Addr().(*net.TCPAddr).Port
	go s.Serve(l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { s.Close() })
	return r
}

func (r *relay) received() []relayedMail {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]relayedMail(nil), r.mails...)
}

type relaySession struct {
	r          *relay
	c          *smtp.Conn
	to         []string
	user, pass string
}

func (s *relaySession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *relaySession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if pass != "right" {
			return errors.New("bad credentials")
		}
		s.user, s.pass = user, pass
		return nil
	}), nil
}
func (s *relaySession) Reset()                               { s.to = nil }
func (s *relaySession) Logout() error                        { return nil }
func (s *relaySession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *relaySession) Data(r io.Reader) error {
	if _, err := io.ReadAll(r); err != nil {
		return err
	}
	_, encrypted := s.c.TLSConnectionState()
	s.r.mu.Lock()
	s.r.mails = append(s.r.mails, relayedMail{to: s.to, tls: encrypted, user: s.user, pass: s.pass})
	s.r.mu.Unlock()
	return nil
}

// TestSMTPTransportSecurity sends a mail through the email pushers' SMTP
// client to a real relay in each TLS mode: it must arrive encrypted when
// TLS is asked for, and never go when the relay cannot give it (no
// STARTTLS, a certificate that does not verify) or, in clear, to a relay
// off loopback.
func TestSMTPTransportSecurity(t *testing.T) {
	tests := []struct {
		name    string
		relay   relayMode
		cfg     func(r *relay) EmailConfig
		wantErr string // empty: the mail must arrive
		wantTLS bool
	}{
		{"starttls, ca_file", relayStartTLS, func(r *relay) EmailConfig {
			return EmailConfig{TLS: "starttls", CAFile: r.caFile}
		}, "", true},
		{"starttls is the default", relayStartTLS, func(r *relay) EmailConfig {
			return EmailConfig{CAFile: r.caFile}
		}, "", true},
		{"implicit tls, ca_file", relayImplicit, func(r *relay) EmailConfig {
			return EmailConfig{TLS: "tls", CAFile: r.caFile}
		}, "", true},
		{"starttls, insecure_skip_verify", relayStartTLS, func(r *relay) EmailConfig {
			return EmailConfig{TLS: "starttls", InsecureSkipVerify: true}
		}, "", true},
		{"starttls with a password", relayStartTLS, func(r *relay) EmailConfig {
			return EmailConfig{TLS: "starttls", CAFile: r.caFile, Username: "tessera", Password: "right"}
		}, "", true},
		{"none to loopback", relayPlain, func(r *relay) EmailConfig {
			return EmailConfig{TLS: "none"}
		}, "", false},
		{"starttls required, relay without it", relayPlain, func(r *relay) EmailConfig {
			return EmailConfig{TLS: "starttls", CAFile: r.caFile}
		}, "STARTTLS", false},
		{"starttls, certificate not trusted", relayStartTLS, func(r *relay) EmailConfig {
			return EmailConfig{TLS: "starttls"}
		}, "certificate", false},
		{"implicit tls, certificate not trusted", relayImplicit, func(r *relay) EmailConfig {
			return EmailConfig{TLS: "tls"}
		}, "certificate", false},
		{"starttls, certificate for another name", relayStartTLS, func(r *relay) EmailConfig {
			return EmailConfig{TLS: "starttls", CAFile: r.caFile, TLSName: "smtp.example.org"}
		}, "certificate", false},
		{"wrong password", relayStartTLS, func(r *relay) EmailConfig {
			return EmailConfig{TLS: "starttls", CAFile: r.caFile, Username: "tessera", Password: "s3cret-wrong"}
		}, "auth", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, tt.relay)
			cfg := tt.cfg(r)
			cfg.SMTPHost, cfg.SMTPPort = "127.0.0.1", r.port
			e := testEmailer(t, cfg)
			err := e.send(context.Background(), "alice@example.org", []byte("Subject: hi\r\n\r\nhello\r\n"))
			got := r.received()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("send: %v, want an error about %q", err, tt.wantErr)
				}
				if cfg.Password != "" && strings.Contains(err.Error(), cfg.Password) {
					t.Fatalf("the error shows the password: %v", err)
				}
				if len(got) != 0 {
					t.Fatalf("%d mails arrived, want none", len(got))
				}
				return
			}
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			if len(got) != 1 || len(got[0].to) != 1 || got[0].to[0] != "alice@example.org" {
				t.Fatalf("arrived: %+v", got)
			}
			if got[0].tls != tt.wantTLS {
				t.Fatalf("arrived over TLS: %v, want %v", got[0].tls, tt.wantTLS)
			}
			if got[0].user != cfg.Username || got[0].pass != cfg.Password {
				t.Fatalf("relay authenticated %q/%q, want %q", got[0].user, got[0].pass, cfg.Username)
			}
		})
	}
}

// TestSMTPPlaintextOffLoopback: with tls none, a relay that is not on
// loopback is refused before a byte is sent (192.0.2.1 is TEST-NET-1:
// the refusal comes before any connection attempt).
func TestSMTPPlaintextOffLoopback(t *testing.T) {
	e := testEmailer(t, EmailConfig{SMTPHost: "192.0.2.1", SMTPPort: 25, TLS: "none"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := e.send(ctx, "alice@example.org", []byte("Subject: hi\r\n\r\nhello\r\n"))
	if !errors.Is(err, errPlaintextRelay) {
		t.Fatalf("send: %v, want %v", err, errPlaintextRelay)
	}
}

// TestSMTPCAFileErrors: a CA file that cannot be read or holds no
// certificate stops the start, rather than falling back to the system's.
func TestSMTPCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(dir, "missing.pem"), empty} {
		if _, err := smtpTLSConfig(EmailConfig{SMTPHost: "smtp.example.org", CAFile: f}); err == nil {
			t.Errorf("ca_file %s accepted", f)
		}
	}
}

func testEmailer(t *testing.T, cfg EmailConfig) *emailer {
	t.Helper()
	tlsConfig, err := smtpTLSConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &emailer{cfg: cfg, tls: tlsConfig, from: &mail.Address{Address: "noreply@example.org"}}
}

// TestNextThrottle: Synapse's throttle steps (the delay, then a day),
// and its reset after a quiet half day.
func TestNextThrottle(t *testing.T) {
	const delay = 10 * time.Minute
	tests := []struct {
		name                string
		current, delay, gap time.Duration
		want                time.Duration
	}{
		{"first mail", 0, delay, 0, delay},
		{"first mail after a quiet room", 0, delay, 13 * time.Hour, delay},
		{"second mail", delay, delay, time.Minute, 24 * time.Hour},
		{"at the cap", 24 * time.Hour, delay, time.Hour, 24 * time.Hour},
		{"quiet for half a day", 24 * time.Hour, delay, 12*time.Hour + time.Second, delay},
		{"not quite quiet", 24 * time.Hour, delay, 12 * time.Hour, 24 * time.Hour},
		{"a short delay grows 144 times", 2 * time.Second, 2 * time.Second, 0, 288 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nextThrottle(tt.current, tt.delay, tt.gap); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
