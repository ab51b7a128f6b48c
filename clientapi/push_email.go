package clientapi

import (
	"fmt"
	"html/template"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/push"
)

// The links in the mails of email pushers (push/email_links.go): opened
// from a mailbox, so without an access token; the signed token in the URL
// says who and what. A GET only shows a page with a button, because mail
// scanners open links; the POST (the button, or a mail client's one-click
// List-Unsubscribe, RFC 8058) does it. Served only when email pushers are
// enabled.

func (a *API) emailLinkRoutes(r *mux.Router) {
	if a.push == nil || a.cfg.Push.Email.SMTPHost == "" {
		return
	}
	h := http.HandlerFunc(a.emailLink)
	r.Handle(push.EmailLinkPath+"/{action:"+push.LinkConfirm+"|"+push.LinkUnsubscribe+"}", h).
		Methods(http.MethodGet, http.MethodPost)
}

var emailLinkPage = template.Must(template.New("").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title></head><body>
<h1>{{.Title}}</h1>
<p>{{.Text}}</p>
{{if .Button}}<form method="post"><button type="submit">{{.Button}}</button></form>{{end}}
</body></html>
`))

type emailLinkView struct{ Title, Text, Button string }

func (a *API) emailLink(w http.ResponseWriter, r *http.Request) {
	action, token := pathVar(r, "action"), r.URL.Query().Get("token")
	confirm := action == push.LinkConfirm
	v := emailLinkView{Title: "Unsubscribe", Text: "Stop the notification emails to %s for %s?", Button: "Unsubscribe"}
	if confirm {
		v = emailLinkView{Title: "Confirm your email address", Text: "Send the notifications of %s to %s?", Button: "Confirm"}
	}
	userID, address, err := a.push.EmailLink(action, token)
	if err == nil && r.Method == http.MethodPost {
		if confirm {
			err = a.push.ConfirmEmail(r.Context(), token)
			v.Text = "Notifications of %s will be mailed to %s."
		} else {
			err = a.push.UnsubscribeEmail(r.Context(), token)
			v.Text = "You will get no more notification emails to %s for %s."
		}
		v.Button = ""
	}
	status := http.StatusOK
	if err != nil {
		me, ok := mxerr.As(err)
		if !ok {
			a.log.WithError(err).Error("email link")
			me = mxerr.Unknown(http.StatusInternalServerError, "Something went wrong; try again later.")
		}
		status, v.Text, v.Button = me.Status, me.Message, ""
	} else if confirm {
		v.Text = fmt.Sprintf(v.Text, userID, address)
	} else {
		v.Text = fmt.Sprintf(v.Text, address, userID)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; form-action 'self'")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_ = emailLinkPage.Execute(w, v)
}
