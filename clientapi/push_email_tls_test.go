package clientapi_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	logrustest "github.com/sirupsen/logrus/hooks/test"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
	"github.com/tessera-hs/tessera/internal/tlscert"
)

// TestEmailPushersOverTLS: the email pushers' mail (here the confirmation
// link that pushers/set sends) reaches a real relay over STARTTLS or
// implicit TLS, with the relay's certificate checked against ca_file and
// the password given only inside TLS; a relay that does not offer the
// STARTTLS the config requires gets nothing, and the password is never
// in the server's log.
func TestEmailPushersOverTLS(t *testing.T) {
	t.Parallel()
	const password = "smtp-s3cret-pa55"
	dir := t.TempDir()
	cert, _, err := tlscert.LoadOrGenerate(dir, "127.0.0.1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, tlscert.CertFile)
	tests := []struct {
		name      string
		sink      sinkOptions
		mode      string
		delivered bool
	}{
		{"starttls", sinkOptions{tls: cert, password: password}, "starttls", true},
		{"implicit tls", sinkOptions{tls: cert, implicit: true, password: password}, "tls", true},
		{"starttls required, relay without it", sinkOptions{}, "starttls", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sink := newMailSinkWith(t, tt.sink)
			srv := testserver.Start(t, withEmail(sink), func(c *config.Config) {
				c.Push.Email.TLS = tt.mode
				c.Push.Email.CAFile = caFile
				c.Push.Email.Username, c.Push.Email.Password = "tessera", password
			})
			logs := logrustest.NewLocal(srv.Log)
			alice := registerUser(t, srv, "alice", psPassword)
			setEmailPusher(t, srv, alice, "alice@example.org").expect(t, http.StatusOK, "")
			if tt.delivered {
				m := sink.waitMails(t, 1)[0]
				if !m.tls || m.user != "tessera" || !strings.Contains(m.subject, "Confirm") {
					t.Fatalf("mail arrived with tls=%v user=%q subject=%q", m.tls, m.user, m.subject)
				}
			} else {
				// The relay is reached, refused after its EHLO, and the
				// failure logged.
				deadline := time.Now().Add(15 * time.Second)
				for !loggedError(logs, "STARTTLS") {
					if time.Now().After(deadline) {
						t.Fatal("no error logged about the missing STARTTLS")
					}
					time.Sleep(20 * time.Millisecond)
				}
				if got := sink.received(); len(got) != 0 {
					t.Fatalf("%d mails went to a relay without STARTTLS", len(got))
				}
			}
			for _, e := range logs.AllEntries() {
				if line, _ := e.String(); strings.Contains(line, password) {
					t.Fatalf("the SMTP password is in the log: %s", line)
				}
			}
		})
	}
}

func loggedError(h *logrustest.Hook, substr string) bool {
	for _, e := range h.AllEntries() {
		if err, ok := e.Data["error"].(error); ok && strings.Contains(err.Error(), substr) {
			return true
		}
	}
	return false
}
