package clientapi_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// mailSink is a real SMTP server (go-smtp) that keeps what it receives.
type mailSink struct {
	addr  *net.TCPAddr
	mu    sync.Mutex
	mails []sunkMail
	conns int
}

type sunkMail struct {
	to               []string
	tls              bool   // the session was encrypted
	user             string // who authenticated (AUTH PLAIN)
	header           mail.Header
	subject          string
	text, html       string
	unsubscribeLinks string
}

func newMailSink(t testing.TB) *mailSink { return newMailSinkWith(t, sinkOptions{}) }

// sinkOptions make the sink a relay that speaks TLS and wants a password.
type sinkOptions struct {
	// tls is offered as STARTTLS, or from the first byte if implicit.
	tls      *tls.Config
	implicit bool
	// password, when set, is asked for with AUTH PLAIN.
	password string
}

func newMailSinkWith(t testing.TB, o sinkOptions) *mailSink {
	t.Helper()
	sink := &mailSink{}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		sink.mu.Lock()
		sink.conns++
		sink.mu.Unlock()
		base := &sinkSession{t: t, sink: sink, conn: c}
		if o.password != "" {
			return &authSinkSession{base, o.password}, nil
		}
		return base, nil
	}))
	s.Domain = "localhost"
	s.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes
	var l net.Listener
	var err error
	if o.tls != nil && o.implicit {
		l, err = tls.Listen("tcp", "127.0.0.1:0", o.tls)
	} else {
		s.TLSConfig = o.tls
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	sink.addr = l.Addr().(*net.TCPAddr)
	go s.Serve(l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { s.Close() })
	return sink
}

type sinkSession struct {
	t    testing.TB
	sink *mailSink
	conn *smtp.Conn
	to   []string
	user string
}

// authSinkSession asks for a password.
type authSinkSession struct {
	*sinkSession
	password string
}

func (s *authSinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *authSinkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if pass != s.password {
			return errors.New("bad credentials")
		}
		s.user = user
		return nil
	}), nil
}

func (s *sinkSession) Reset()        { s.to = nil }
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(string, *smtp.MailOptions) error {
	return nil
}
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

// Data parses the mail: its headers, and the text and HTML parts of its
// multipart/alternative body (quoted-printable decoded).
func (s *sinkSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		s.t.Errorf("unparsable mail: %v\n%s", err, raw)
		return err
	}
	_, encrypted := s.conn.TLSConnectionState()
	got := sunkMail{to: s.to, tls: encrypted, user: s.user, header: m.Header, unsubscribeLinks: m.Header.Get("List-Unsubscribe")}
	got.subject, err = new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		s.t.Errorf("subject: %v", err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		s.t.Errorf("content type %q: %v", m.Header.Get("Content-Type"), err)
		return nil
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			s.t.Errorf("mail part: %v", err)
			return nil
		}
		b, _ := io.ReadAll(p)
		switch pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); pt {
		case "text/plain":
			got.text = string(b)
		case "text/html":
			got.html = string(b)
		}
	}
	s.sink.mu.Lock()
	s.sink.mails = append(s.sink.mails, got)
	s.sink.mu.Unlock()
	return nil
}

func (m *mailSink) received() []sunkMail {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]sunkMail(nil), m.mails...)
}

// waitMails waits until n mails arrived and returns them.
func (m *mailSink) waitMails(t testing.TB, n int) []sunkMail {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if got := m.received(); len(got) >= n {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("waited for %d mails, got %d", n, len(m.received()))
	return nil
}

const emailTestBaseURL = "https://matrix.example.org"

// emailDelay is how long a room's first notification waits for more in
// these tests.
const emailDelay = 2500 * time.Millisecond

func withEmail(sink *mailSink) testserver.Option {
	return func(c *config.Config) {
		c.PublicBaseURL = emailTestBaseURL
		c.Push.Email = config.PushEmail{SMTPHost: "127.0.0.1", SMTPPort: sink.addr.Port, TLS: "none",
			From: "Tessera <noreply@example.org>", AppName: "Tessera", Delay: config.Duration(emailDelay)}
	}
}

func setEmailPusher(t testing.TB, srv *testserver.Server, s session, address string) resp {
	t.Helper()
	return post(t, srv, v3+"/pushers/set", s.AccessToken, map[string]any{
		"kind": "email", "app_id": "m.email", "pushkey": address, "app_display_name": "Email",
		"device_display_name": address, "lang": "en", "data": map[string]any{},
	})
}

var mailLink = regexp.MustCompile(regexp.QuoteMeta(emailTestBaseURL) + `(/_tessera/push/v1/email/[a-z]+\?token=[^\s<>"]+)`)

// linkPath is the path of the first link of the server's in text.
func linkPath(t testing.TB, text string) string {
	t.Helper()
	m := mailLink.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no link in %q", text)
	}
	return m[1]
}

// followLink opens a link as a browser would: the page (GET), then its
// button (POST).
func followLink(t testing.TB, srv *testserver.Server, path, button string) {
	t.Helper()
	r := do(t, srv, req{Method: http.MethodGet, Path: path})
	if r.Status != http.StatusOK || !strings.Contains(string(r.Raw), ">"+button+"</button>") {
		t.Fatalf("GET %s: %d %s", path, r.Status, r.Raw)
	}
	r = do(t, srv, req{Method: http.MethodPost, Path: path})
	if r.Status != http.StatusOK || strings.Contains(string(r.Raw), "<button") {
		t.Fatalf("POST %s: %d %s", path, r.Status, r.Raw)
	}
}

func TestEmailPushers(t *testing.T) {
	t.Parallel()
	sink := newMailSink(t)
	srv := testserver.Start(t, withEmail(sink))
	alice := registerUser(t, srv, "alice", psPassword)
	bob := registerUser(t, srv, "bob", psPassword)
	put(t, srv, adPath("profile", bob.UserID, "displayname"), bob.AccessToken, map[string]any{"displayname": "Bob <the builder>"}).
		expect(t, http.StatusOK, "")
	book := adCreateRoom(t, srv, bob, map[string]any{"preset": "public_chat", "name": "Book club"})
	chess := adCreateRoom(t, srv, bob, map[string]any{"preset": "public_chat", "name": "Chess"})
	adJoin(t, srv, alice, book)
	adJoin(t, srv, alice, chess)

	// Bad email pushers.
	for _, c := range []struct {
		name, appID, pushkey string
	}{{"app id", "com.example", "alice@example.org"}, {"not an address", "m.email", "alice"},
		{"with a name", "m.email", "Alice <alice@example.org>"}} {
		r := post(t, srv, v3+"/pushers/set", alice.AccessToken, map[string]any{
			"kind": "email", "app_id": c.appID, "pushkey": c.pushkey, "app_display_name": "Email",
			"device_display_name": "x", "lang": "en", "data": map[string]any{},
		})
		if r.Status != http.StatusBadRequest || r.Body["errcode"] != "M_INVALID_PARAM" {
			t.Errorf("%s: %d %s", c.name, r.Status, r.Raw)
		}
	}

	// An address not yet confirmed gets a confirmation link, and no
	// notifications until it is followed.
	setEmailPusher(t, srv, alice, "Alice@Example.org").expect(t, http.StatusOK, "")
	confirm := sink.waitMails(t, 1)[0]
	if len(confirm.to) != 1 || confirm.to[0] != "alice@example.org" || !strings.Contains(confirm.subject, "Confirm") {
		t.Fatalf("confirmation mail: %+v", confirm)
	}
	psSend(t, srv, bob, book, "m.room.message", psText("before confirming"))
	// Setting it again does not mail another link at once.
	setEmailPusher(t, srv, alice, "alice@example.org").expect(t, http.StatusOK, "")
	// A forged or reused-for-another-action token is refused.
	path := linkPath(t, confirm.text)
	if r := do(t, srv, req{Method: http.MethodPost, Path: path + "x"}); r.Status != http.StatusForbidden {
		t.Fatalf("forged link: %d", r.Status)
	}
	if r := do(t, srv, req{Method: http.MethodPost, Path: strings.Replace(path, "/confirm?", "/unsubscribe?", 1)}); r.Status != http.StatusForbidden {
		t.Fatalf("confirm token used to unsubscribe: %d", r.Status)
	}
	followLink(t, srv, path, "Confirm")
	time.Sleep(emailDelay + 500*time.Millisecond)
	if got := sink.received(); len(got) != 1 {
		t.Fatalf("mails before confirmation were notified: %+v", got[1:])
	}

	// Three messages in one room and one in another: one mail per room,
	// Delay after the first.
	start := time.Now()
	psSend(t, srv, bob, book, "m.room.message", psText("<b>chapter 1</b> & more"))
	psSend(t, srv, bob, chess, "m.room.message", psText("your move"))
	psSend(t, srv, bob, book, "m.room.message", psText("chapter 2"))
	psSend(t, srv, bob, book, "m.room.message", psText("chapter 3"))
	mails := sink.waitMails(t, 3)[1:]
	if waited := time.Since(start); waited < emailDelay {
		t.Errorf("mailed after %v, before the delay", waited)
	}
	time.Sleep(300 * time.Millisecond)
	if got := sink.received(); len(got) != 3 {
		t.Fatalf("want one mail per room, got %d", len(got)-1)
	}
	var bookMail, chessMail sunkMail
	for _, m := range mails {
		switch {
		case strings.Contains(m.subject, "Book club"):
			bookMail = m
		case strings.Contains(m.subject, "Chess"):
			chessMail = m
		}
	}
	if bookMail.subject != "[Tessera] 3 new notifications in Book club" || chessMail.subject != "[Tessera] 1 new notification in Chess" {
		t.Fatalf("subjects: %q, %q", bookMail.subject, chessMail.subject)
	}
	for _, want := range []string{"Bob <the builder>: <b>chapter 1</b> & more", "Bob <the builder>: chapter 2", "chapter 3"} {
		if !strings.Contains(bookMail.text, want) {
			t.Errorf("text part lacks %q:\n%s", want, bookMail.text)
		}
	}
	if !strings.Contains(bookMail.html, "<b>Bob &lt;the builder&gt;</b>: &lt;b&gt;chapter 1&lt;/b&gt; &amp; more") {
		t.Errorf("html part not escaped:\n%s", bookMail.html)
	}
	if strings.Contains(bookMail.text, "before confirming") {
		t.Error("a notification from before the confirmation was mailed")
	}
	if !strings.HasPrefix(bookMail.unsubscribeLinks, "<"+emailTestBaseURL) ||
		bookMail.header.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
		t.Errorf("unsubscribe headers: %v", bookMail.header)
	}

	// Read before the delay: nothing is sent.
	ev := psSend(t, srv, bob, book, "m.room.message", psText("read it on the phone"))
	psReceipt(t, srv, alice, book, "m.read", ev, nil)
	time.Sleep(emailDelay + 700*time.Millisecond)
	if got := sink.received(); len(got) != 3 {
		t.Fatalf("a read notification was mailed: %+v", got[3:])
	}

	// A restart while a mail waits neither loses nor repeats it.
	psSend(t, srv, bob, chess, "m.room.message", psText("checkmate"))
	srv.Restart()
	got := sink.waitMails(t, 4)
	time.Sleep(emailDelay)
	if got = sink.received(); len(got) != 4 || !strings.Contains(got[3].text, "checkmate") {
		t.Fatalf("after a restart: %d mails, last %+v", len(got), got[len(got)-1])
	}

	// The unsubscribe link (as a mail client's one-click POST) deletes the
	// pusher: nothing more is mailed.
	unsub := mailLink.FindStringSubmatch(strings.Trim(got[3].unsubscribeLinks, "<>"))
	if unsub == nil {
		t.Fatalf("List-Unsubscribe: %q", got[3].unsubscribeLinks)
	}
	r := do(t, srv, req{Method: http.MethodPost, Path: unsub[1], Body: "List-Unsubscribe=One-Click",
		Headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}})
	if r.Status != http.StatusOK {
		t.Fatalf("unsubscribe: %d %s", r.Status, r.Raw)
	}
	if r := get(t, srv, v3+"/pushers", alice.AccessToken).expect(t, http.StatusOK, ""); strings.Contains(string(r.Raw), "m.email") {
		t.Fatalf("pushers after unsubscribing: %s", r.Raw)
	}
	psSend(t, srv, bob, chess, "m.room.message", psText("anyone?"))
	time.Sleep(emailDelay + 500*time.Millisecond)
	if got := sink.received(); len(got) != 4 {
		t.Fatalf("mailed after unsubscribing: %+v", got[4:])
	}
}

// TestEmailPushersOff: without an SMTP relay, email pushers are refused
// and nothing is mailed; the link endpoints are not served.
func TestEmailPushersOff(t *testing.T) {
	t.Parallel()
	sink := newMailSink(t)
	// Everything but the relay's host.
	srv := testserver.Start(t, withEmail(sink), func(c *config.Config) { c.Push.Email.SMTPHost = "" })
	alice := registerUser(t, srv, "alice", psPassword)
	bob := registerUser(t, srv, "bob", psPassword)
	room := adCreateRoom(t, srv, bob, map[string]any{"preset": "public_chat"})
	adJoin(t, srv, alice, room)
	setEmailPusher(t, srv, alice, "alice@example.org").expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	psSend(t, srv, bob, room, "m.room.message", psText("hello"))
	do(t, srv, req{Method: http.MethodPost, Path: "/_tessera/push/v1/email/unsubscribe?token=x"}).
		expect(t, http.StatusNotFound, "M_UNRECOGNIZED")
	time.Sleep(500 * time.Millisecond)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.conns != 0 {
		t.Fatalf("%d SMTP connections with email off", sink.conns)
	}
}

// TestEmailThrottle: as Synapse, a room's second mail waits at least the
// delay after its first, and the third the grown throttle (144 times the
// delay, up to a day); the throttle is stored, so it holds after a
// restart, and another room is not held back by it.
func TestEmailThrottle(t *testing.T) {
	t.Parallel()
	sink := newMailSink(t)
	srv := testserver.Start(t, withEmail(sink))
	alice := registerUser(t, srv, "alice", psPassword)
	bob := registerUser(t, srv, "bob", psPassword)
	busy := adCreateRoom(t, srv, bob, map[string]any{"preset": "public_chat", "name": "Busy"})
	other := adCreateRoom(t, srv, bob, map[string]any{"preset": "public_chat", "name": "Other"})
	adJoin(t, srv, alice, busy)
	adJoin(t, srv, alice, other)
	setEmailPusher(t, srv, alice, "alice@example.org").expect(t, http.StatusOK, "")
	followLink(t, srv, linkPath(t, sink.waitMails(t, 1)[0].text), "Confirm")

	psSend(t, srv, bob, busy, "m.room.message", psText("one"))
	first := sink.waitMails(t, 2)[1]
	firstAt := time.Now()
	psSend(t, srv, bob, busy, "m.room.message", psText("two"))
	second := sink.waitMails(t, 3)[2]
	if waited := time.Since(firstAt); waited < emailDelay {
		t.Errorf("second mail %v after the first, before the throttle (%v)", waited, emailDelay)
	}
	if !strings.Contains(first.text, "one") || !strings.Contains(second.text, "two") || strings.Contains(second.text, "one") {
		t.Fatalf("mails: %q, %q", first.text, second.text)
	}

	// The throttle is now 144 × the delay: a third message, sent after a
	// restart, is not mailed after the delay.
	srv.Restart()
	psSend(t, srv, bob, busy, "m.room.message", psText("three"))
	psSend(t, srv, bob, other, "m.room.message", psText("elsewhere"))
	sink.waitMails(t, 4)
	time.Sleep(emailDelay + time.Second)
	got := sink.received()
	if len(got) != 4 || !strings.Contains(got[3].subject, "Other") {
		for _, m := range got[3:] {
			t.Errorf("mailed: %s: %q", m.subject, m.text)
		}
		t.Fatalf("want only the other room's mail while Busy is throttled, got %d mails", len(got)-3)
	}
}
