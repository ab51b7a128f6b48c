package push

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	texttemplate "text/template"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// The mails of email pushers and how they reach the SMTP relay.

const (
	// maxMailItems is how many notifications one mail lists; a mail for
	// more says how many it left out.
	maxMailItems = 20
	// maxMailRows bounds the notifications a mail counts.
	maxMailRows = 1000
	// maxBodyChars cuts a long message in a mail.
	maxBodyChars = 300
	// smtpTimeout bounds one mail's conversation with the relay.
	smtpTimeout = time.Minute
)

// mailItem is one notification in a mail.
type mailItem struct{ info *eventInfo }

// sender is how the mail names the item's sender.
func (m mailItem) sender() string {
	if m.info.senderDisplayName != "" {
		return m.info.senderDisplayName
	}
	return m.info.sender
}

// text is what the mail says of the event.
func (m mailItem) text() string {
	var c struct {
		Body       string `json:"body"`
		MsgType    string `json:"msgtype"`
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(m.info.content, &c)
	switch m.info.typ {
	case "m.room.message":
		if c.MsgType == "m.emote" {
			return "* " + m.sender() + " " + cut(c.Body)
		}
		if c.Body != "" {
			return cut(c.Body)
		}
	case "m.room.encrypted":
		return "(an encrypted message)"
	case "m.sticker":
		return "(a sticker)"
	case "m.room.member":
		if c.Membership == "invite" {
			return "(invited you)"
		}
	case "m.call.invite", "m.rtc.notification", "org.matrix.msc4075.rtc.notification":
		return "(called)"
	}
	return "(" + m.info.typ + ")"
}

func cut(s string) string {
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) <= maxBodyChars {
		return s
	}
	return string([]rune(s)[:maxBodyChars]) + "…"
}

// roomLabel names the room of a mail: its name, its alias, or who wrote.
func roomLabel(items []mailItem) string {
	info := items[0].info
	if info.roomName != "" {
		return info.roomName
	}
	if info.roomAlias != "" {
		return info.roomAlias
	}
	var names []string
	seen := map[string]bool{}
	for _, it := range items {
		if n := it.sender(); !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	return "a conversation with " + strings.Join(names, ", ")
}

type mailData struct {
	AppName, UserID, Address, Room, RoomURL, UnsubscribeURL, ConfirmURL string
	Count                                                               int
	Items                                                               []mailLine
}

type mailLine struct{ Sender, Text string }

var notificationText = texttemplate.Must(texttemplate.New("").Parse(`You have {{.Count}} unread notification{{if ne .Count 1}}s{{end}} in {{.Room}}:
{{range .Items}}
{{.Sender}}: {{.Text}}
{{- end}}
{{if gt .Count (len .Items)}}
... {{.Count}} in all.
{{end}}
Open the room: {{.RoomURL}}

You get this mail because {{.UserID}} asked {{.AppName}} to mail notifications to {{.Address}}.
Unsubscribe: {{.UnsubscribeURL}}
`))

var notificationHTML = htmltemplate.Must(htmltemplate.New("").Parse(`<!DOCTYPE html>
<html><body>
<p>You have {{.Count}} unread notification{{if ne .Count 1}}s{{end}} in <b>{{.Room}}</b>:</p>
<ul>
{{range .Items}}<li><b>{{.Sender}}</b>: {{.Text}}</li>
{{end}}</ul>
{{if gt .Count (len .Items)}}<p>... {{.Count}} in all.</p>{{end}}
<p><a href="{{.RoomURL}}">Open the room</a></p>
<p style="font-size:small">You get this mail because {{.UserID}} asked {{.AppName}} to mail notifications to {{.Address}}.
<a href="{{.UnsubscribeURL}}">Unsubscribe</a></p>
</body></html>
`))

var confirmText = texttemplate.Must(texttemplate.New("").Parse(`{{.UserID}} asked {{.AppName}} to mail their notifications to {{.Address}}.

To confirm that this is your address, open this link:
{{.ConfirmURL}}

If it was not you, ignore this mail: nothing will be sent.
`))

var confirmHTML = htmltemplate.Must(htmltemplate.New("").Parse(`<!DOCTYPE html>
<html><body>
<p>{{.UserID}} asked {{.AppName}} to mail their notifications to {{.Address}}.</p>
<p><a href="{{.ConfirmURL}}">Confirm that this is your address</a></p>
<p>If it was not you, ignore this mail: nothing will be sent.</p>
</body></html>
`))

// notificationMail is the mail of a batch: total notifications, of which
// it lists items.
func (e *emailer) notificationMail(k batchKey, items []mailItem, total int) ([]byte, error) {
	d := mailData{
		AppName: e.cfg.AppName, UserID: k.userID, Address: k.address, Room: roomLabel(items),
		RoomURL:        "https://matrix.to/#/" + url.PathEscape(k.roomID),
		UnsubscribeURL: e.link(LinkUnsubscribe, k.userID, k.address), Count: total,
	}
	for _, it := range items {
		d.Items = append(d.Items, mailLine{Sender: it.sender(), Text: it.text()})
	}
	subject := fmt.Sprintf("[%s] %d new notification", e.cfg.AppName, d.Count)
	if d.Count != 1 {
		subject += "s"
	}
	subject += " in " + d.Room
	return e.compose(k.address, subject, d, notificationText, notificationHTML, d.UnsubscribeURL)
}

// confirmationMail asks the owner of an address to confirm it.
func (e *emailer) confirmationMail(userID, address string) ([]byte, error) {
	d := mailData{AppName: e.cfg.AppName, UserID: userID, Address: address, ConfirmURL: e.link(LinkConfirm, userID, address)}
	return e.compose(address, fmt.Sprintf("[%s] Confirm your email address for notifications", e.cfg.AppName), d,
		confirmText, confirmHTML, "")
}

// compose builds a multipart/alternative mail (text and HTML), with the
// one-click unsubscribe headers (RFC 8058) when unsubscribe is set.
func (e *emailer) compose(to, subject string, d mailData, text *texttemplate.Template, html *htmltemplate.Template,
	unsubscribe string) ([]byte, error) {
	var textPart, htmlPart bytes.Buffer
	if err := text.Execute(&textPart, d); err != nil {
		return nil, fmt.Errorf("mail text: %w", err)
	}
	if err := html.Execute(&htmlPart, d); err != nil {
		return nil, fmt.Errorf("mail html: %w", err)
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := []struct{ k, v string }{
		{"From", e.from.String()},
		{"To", "<" + to + ">"},
		{"Subject", mime.QEncoding.Encode("utf-8", subject)},
		{"Date", e.s.now().Format(time.RFC1123Z)},
		{"Message-ID", "<" + hex.EncodeToString(id) + "@" + string(e.s.cfg.ServerName) + ">"},
		{"MIME-Version", "1.0"},
		{"Auto-Submitted", "auto-generated"},
	}
	if unsubscribe != "" {
		h = append(h, struct{ k, v string }{"List-Unsubscribe", "<" + unsubscribe + ">"},
			struct{ k, v string }{"List-Unsubscribe-Post", "List-Unsubscribe=One-Click"})
	}
	h = append(h, struct{ k, v string }{"Content-Type", "multipart/alternative; boundary=" + strconv.Quote(mw.Boundary())})
	var head bytes.Buffer
	for _, x := range h {
		head.WriteString(x.k + ": " + x.v + "\r\n")
	}
	head.WriteString("\r\n")
	for _, part := range []struct {
		typ  string
		body []byte
	}{{"text/plain", textPart.Bytes()}, {"text/html", htmlPart.Bytes()}} {
		w, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {part.typ + "; charset=utf-8"},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, err
		}
		qp := quotedprintable.NewWriter(w)
		if _, err := qp.Write(part.body); err != nil {
			return nil, err
		}
		if err := qp.Close(); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return append(head.Bytes(), buf.Bytes()...), nil
}

// smtpTLSConfig is how the relay's certificate is checked: against the
// system's CAs or those of cfg.CAFile, for cfg.TLSName or the host.
func smtpTLSConfig(cfg EmailConfig) (*tls.Config, error) {
	if cfg.TLS == "none" {
		return nil, nil
	}
	name := cfg.TLSName
	if name == "" {
		name = cfg.SMTPHost
	}
	c := &tls.Config{ServerName: name, MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("push: email ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("push: email ca_file %s: no PEM certificate in it", cfg.CAFile)
		}
	}
	return c, nil
}

// errPlaintextRelay refuses to talk in clear to a relay off this host.
var errPlaintextRelay = errors.New("tls is none and the relay is not on loopback (allow_plaintext allows it)")

// send hands a mail to the relay: over TLS from the first byte (tls),
// after a STARTTLS the relay must offer (starttls), or in clear only to
// loopback (none), checked where the connection goes, not by the name.
func (e *emailer) send(ctx context.Context, to string, msg []byte) error {
	ctx, cancel := context.WithTimeout(ctx, smtpTimeout)
	defer cancel()
	mode := e.cfg.TLS
	if mode == "" {
		mode = "starttls"
	}
	port := e.cfg.SMTPPort
	if port == 0 {
		port = map[string]int{"starttls": 587, "tls": 465, "none": 25}[mode]
	}
	addr := net.JoinHostPort(e.cfg.SMTPHost, strconv.Itoa(port))
	dialer := &net.Dialer{}
	if mode == "none" && !e.cfg.AllowPlaintext {
		dialer.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return errPlaintextRelay
			}
			return nil
		}
	}
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var c *smtp.Client
	switch mode {
	case "tls":
		tc := tls.Client(conn, e.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return fmt.Errorf("smtp: tls: %w", err)
		}
		c = smtp.NewClient(tc)
	case "starttls":
		// Refuses a relay that does not offer STARTTLS.
		if c, err = smtp.NewClientStartTLS(conn, e.tls); err != nil {
			conn.Close()
			return fmt.Errorf("smtp: starttls: %w", err)
		}
	default:
		c = smtp.NewClient(conn)
	}
	defer c.Close()
	if e.cfg.Username != "" {
		// The error is the relay's answer; the password is never in it.
		if err := c.Auth(sasl.NewPlainClient("", e.cfg.Username, e.cfg.Password)); err != nil {
			return fmt.Errorf("smtp: auth: %w", err)
		}
	}
	if err := c.SendMail(e.from.Address, []string{to}, bytes.NewReader(msg)); err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	return c.Quit()
}
