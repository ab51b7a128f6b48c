package clientapi

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/oauth"
	"github.com/tessera-hs/tessera/users"
)

//go:embed templates/oauth.html
var templateFS embed.FS

var oauthPages = template.Must(template.ParseFS(templateFS, "templates/oauth.html"))

// Cookies of the server's pages. Both are HttpOnly and SameSite=Lax, and
// Secure when the server is reached over HTTPS.
const (
	sessionCookie = "tessera_session"
	csrfCookie    = "tessera_csrf"
)

// pagePaths are the pages' URLs, for the templates.
type pagePaths struct {
	Login, Register, Logout, Device, Account, Password, DeleteDevice, Deactivate, CrossSigningReset string
}

var paths = pagePaths{
	Login: pathLoginPage, Register: pathSignupPage, Logout: pathLogoutPage, Device: pathDevicePage, Account: pathAccount,
	Password: pathAccount + "/password", DeleteDevice: pathAccount + "/devices/delete", Deactivate: pathAccount + "/deactivate",
	CrossSigningReset: pathAccount + "/cross-signing-reset",
}

// pageData is what every page template gets.
type pageData struct {
	Title, ServerName, Error, Message, CSRF, UserID, Next, Username string
	Paths                                                           pagePaths
	Client                                                          *oauth.ClientMetadata
	// Consent
	Action, DeviceID string
	Params           url.Values
	// Sign-up
	CanRegister, TokenRequired bool
	// Account
	Devices []accountDevice
	// CrossSigningReset asks the user to approve replacing their
	// cross-signing keys (the m.oauth UIA stage).
	CrossSigningReset bool
}

type accountDevice struct {
	ID, Name, LastSeen string
	Selected           bool
}

func (a *API) oauthPageRoutes(r *mux.Router) {
	get, post := http.MethodGet, http.MethodPost
	r.HandleFunc(pathAuthorize, a.pageAuthorize).Methods(get)
	r.HandleFunc(pathAuthorize, a.pageAuthorizeDecide).Methods(post)
	r.HandleFunc(pathLoginPage, a.pageLogin).Methods(get, post)
	r.HandleFunc(pathSignupPage, a.pageSignup).Methods(get, post)
	r.HandleFunc(pathLogoutPage, a.pageLogout).Methods(post)
	r.HandleFunc(pathDevicePage, a.pageDevice).Methods(get, post)
	r.HandleFunc(pathAccount, a.pageAccount).Methods(get)
	r.HandleFunc(paths.Password, a.pageChangePassword).Methods(post)
	r.HandleFunc(paths.DeleteDevice, a.pageDeleteDevice).Methods(post)
	r.HandleFunc(paths.Deactivate, a.pageDeactivate).Methods(post)
	r.HandleFunc(paths.CrossSigningReset, a.pageCrossSigningReset).Methods(post)
}

// page starts a page's data: the CSRF token (set as a cookie on first
// visit) and the signed-in user, if any.
func (a *API) page(w http.ResponseWriter, r *http.Request, title string) *pageData {
	d := &pageData{Title: title, ServerName: a.cfg.ServerName, Paths: paths}
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) >= 32 {
		d.CSRF = c.Value
	} else {
		d.CSRF = randomCookieValue()
		a.setCookie(w, r, csrfCookie, d.CSRF, 0)
	}
	d.UserID = a.pageUser(r)
	return d
}

func randomCookieValue() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// setCookie sets (maxAge > 0: persistent, 0: session, < 0: deletes) one of
// the pages' cookies.
func (a *API) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: pagesPrefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: strings.HasPrefix(a.baseURL(r), "https://"),
	})
}

// pageUser is the user signed in to the pages, or "". A deactivated
// account's sessions are over.
func (a *API) pageUser(r *http.Request) string {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return ""
	}
	userID, err := a.oauth.BrowserSession(r.Context(), c.Value)
	if err != nil || userID == "" {
		return ""
	}
	if acc, err := a.users.Account(r.Context(), userID); err != nil || acc == nil || acc.Deactivated {
		return ""
	}
	return userID
}

// checkCSRF refuses a form post whose token does not match the cookie
// (double-submit): another site can make the browser post, but cannot read
// the cookie to put it in the form.
func (a *API) checkCSRF(w http.ResponseWriter, r *http.Request, d *pageData) bool {
	if err := r.ParseForm(); err == nil {
		if c, err := r.Cookie(csrfCookie); err == nil && c.Value != "" &&
			subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostForm.Get("csrf"))) == 1 {
			return true
		}
	}
	d.Title, d.Message = "Request refused", "This form has expired or did not come from this server. Go back, reload the page and try again."
	a.render(w, http.StatusForbidden, "message", d)
	return false
}

func (a *API) render(w http.ResponseWriter, status int, name string, d *pageData) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// No framing (clickjacking of the consent page), no scripts at all.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	if err := oauthPages.ExecuteTemplate(w, name, d); err != nil {
		a.log.WithError(err).WithField("template", name).Error("rendering an OAuth page")
	}
}

// pageError shows err: a Matrix error's message (a rate limit, a weak
// password) with its status, or a generic failure.
func (a *API) pageError(w http.ResponseWriter, r *http.Request, d *pageData, name string, err error) {
	if me, ok := mxerr.As(err); ok {
		d.Error = me.Message
		if me.Code == "M_LIMIT_EXCEEDED" {
			d.Error = "Too many attempts. Wait a while and try again."
		}
		a.render(w, me.Status, name, d)
		return
	}
	a.log.WithError(err).WithField("path", r.URL.Path).Error("OAuth page failed")
	d.Title, d.Message = "Something went wrong", "The server could not complete the request. Try again later."
	a.render(w, http.StatusInternalServerError, "message", d)
}

// safeNext keeps a post-login redirect on this server's pages.
func safeNext(next string) string {
	if strings.HasPrefix(next, pagesPrefix+"/") && !strings.HasPrefix(next, "//") && !strings.Contains(next, "\\") {
		return next
	}
	return pathAccount
}

// canRegister reports whether the pages may offer sign-up: the same policy
// as /register.
func (a *API) canRegister() bool {
	return a.users.RegistrationTokensRequired() || a.cfg.Registration.Open
}

// pageAuthorize: the authorisation endpoint. Signed out, the login (or,
// with prompt=create, the sign-up) page; signed in, the consent page.
// https://spec.matrix.org/v1.19/client-server-api/#authorization-code-grant
func (a *API) pageAuthorize(w http.ResponseWriter, r *http.Request) {
	d := a.page(w, r, "Sign in")
	req, ok := a.authRequest(w, r, r.URL.Query(), d)
	if !ok {
		return
	}
	d.Client, d.Next = req.Client, r.URL.RequestURI()
	switch {
	case d.UserID == "" && req.Prompt == "create" && a.canRegister():
		d.Title, d.TokenRequired = "Create an account", a.users.RegistrationTokensRequired()
		a.render(w, http.StatusOK, "register", d)
	case d.UserID == "":
		d.CanRegister = a.canRegister()
		a.render(w, http.StatusOK, "login", d)
	default:
		d.Title, d.Action, d.DeviceID, d.Params = "Allow access", pathAuthorize, req.DeviceID(), req.Params()
		a.render(w, http.StatusOK, "consent", d)
	}
}

// authRequest checks an authorisation request; on error it has answered:
// an error page when the client or redirect URI cannot be trusted, else a
// redirect carrying the error to the client.
func (a *API) authRequest(w http.ResponseWriter, r *http.Request, q url.Values, d *pageData) (*oauth.AuthRequest, bool) {
	req, err := a.oauth.ParseAuthorization(r.Context(), q)
	var oe *oauth.Error
	switch {
	case err == nil:
		return req, true
	case errors.As(err, &oe) && req != nil:
		http.Redirect(w, r, req.ErrorRedirect(oe), http.StatusSeeOther)
	case errors.As(err, &oe):
		d.Title, d.Message = "Invalid request", "The application sent an invalid sign-in request: "+oe.Description+"."
		a.render(w, http.StatusBadRequest, "message", d)
	default:
		a.pageError(w, r, d, "message", err)
	}
	return nil, false
}

// pageAuthorizeDecide: the consent form's answer.
func (a *API) pageAuthorizeDecide(w http.ResponseWriter, r *http.Request) {
	d := a.page(w, r, "Allow access")
	if !a.checkCSRF(w, r, d) {
		return
	}
	req, ok := a.authRequest(w, r, r.PostForm, d)
	if !ok {
		return
	}
	if d.UserID == "" {
		d.Client, d.Next, d.Error = req.Client, pathAuthorize+"?"+req.Params().Encode(), "Your session has ended: sign in again."
		a.render(w, http.StatusUnauthorized, "login", d)
		return
	}
	if r.PostForm.Get("action") != "approve" {
		http.Redirect(w, r, req.Deny(), http.StatusSeeOther)
		return
	}
	to, err := a.oauth.Approve(r.Context(), req, d.UserID)
	if err != nil {
		a.pageError(w, r, d, "message", err)
		return
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// checkPasswordLogin checks a password under the login rate limits
// (per account, and backing off after failures) and returns the user.
func (a *API) checkPasswordLogin(r *http.Request, ident, password string) (string, error) {
	userID, err := a.users.ResolveUser(ident)
	if err != nil {
		return "", err
	}
	if err := limit(a.loginPerAccount, userID); err != nil {
		return "", err
	}
	if ok, wait := a.loginFailures.Check(userID); !ok {
		return "", mxerr.LimitExceeded(wait.Milliseconds())
	}
	if err := a.users.CheckPassword(r.Context(), userID, password); err != nil {
		if me, ok := mxerr.As(err); ok && me.Code == "M_FORBIDDEN" {
			a.loginFailures.Allow(userID)
		}
		return "", err
	}
	return userID, nil
}

// signIn starts a page session for userID and sends the browser on.
func (a *API) signIn(w http.ResponseWriter, r *http.Request, d *pageData, userID string) {
	cookie, err := a.oauth.StartBrowserSession(r.Context(), userID)
	if err != nil {
		a.pageError(w, r, d, "message", err)
		return
	}
	a.setCookie(w, r, sessionCookie, cookie, int(a.cfg.Auth.OAuth.SessionLifetime.Std()/time.Second))
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

// credentialsForm serves the login and sign-up pages: a GET shows the
// form (tmpl); a post must carry the CSRF token. It reports whether there
// is a post to act on.
func (a *API) credentialsForm(w http.ResponseWriter, r *http.Request, d *pageData, tmpl string) bool {
	if r.Method == http.MethodGet {
		d.Next = safeNext(r.URL.Query().Get("next"))
		a.render(w, http.StatusOK, tmpl, d)
		return false
	}
	if !a.checkCSRF(w, r, d) {
		return false
	}
	d.Next, d.Username = safeNext(r.PostForm.Get("next")), r.PostForm.Get("username")
	return true
}

// pageLogin: the login page and its form.
func (a *API) pageLogin(w http.ResponseWriter, r *http.Request) {
	d := a.page(w, r, "Sign in")
	d.CanRegister = a.canRegister()
	if !a.credentialsForm(w, r, d, "login") {
		return
	}
	if err := limit(a.loginPerAddress, a.clientIP(r)); err != nil {
		a.pageError(w, r, d, "login", err)
		return
	}
	userID, err := a.checkPasswordLogin(r, d.Username, r.PostForm.Get("password"))
	if err != nil {
		a.pageError(w, r, d, "login", err)
		return
	}
	a.signIn(w, r, d, userID)
}

// pageSignup: the sign-up page, under /register's policy: open
// registration or a registration token.
func (a *API) pageSignup(w http.ResponseWriter, r *http.Request) {
	d := a.page(w, r, "Create an account")
	d.TokenRequired = a.users.RegistrationTokensRequired()
	if !a.canRegister() {
		d.Message = "Registration is not enabled on this server."
		a.render(w, http.StatusForbidden, "message", d)
		return
	}
	if !a.credentialsForm(w, r, d, "register") {
		return
	}
	if err := checkLimit(a.registerPerAddress, a.clientIP(r)); err != nil {
		a.pageError(w, r, d, "register", err)
		return
	}
	token := r.PostForm.Get("registration_token")
	if d.TokenRequired && token == "" {
		d.Error = "A registration token is required."
		a.render(w, http.StatusUnauthorized, "register", d)
		return
	}
	acc, err := a.users.CreateAccount(r.Context(), users.NewAccount{
		Localpart: strings.ToLower(d.Username), Password: r.PostForm.Get("password"), RegistrationToken: token,
	})
	if err != nil {
		if me, ok := mxerr.As(err); ok && me.Code == "M_FORBIDDEN" {
			a.registerPerAddress.Allow(a.clientIP(r)) // a wrong token counts
		}
		a.pageError(w, r, d, "register", err)
		return
	}
	a.registerPerAddress.Allow(a.clientIP(r))
	a.log.WithField("user_id", acc.UserID).Info("registered user through the OAuth sign-up page")
	a.signIn(w, r, d, acc.UserID)
}

// pageLogout signs the browser out of the pages.
func (a *API) pageLogout(w http.ResponseWriter, r *http.Request) {
	d := a.page(w, r, "Signed out")
	if !a.checkCSRF(w, r, d) {
		return
	}
	if c, err := r.Cookie(sessionCookie); err == nil && d.UserID != "" {
		if err := a.oauth.EndBrowserSessions(r.Context(), d.UserID, c.Value); err != nil {
			a.pageError(w, r, d, "message", err)
			return
		}
	}
	a.setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, pathLoginPage, http.StatusSeeOther)
}

// pageDevice: the device authorisation grant's page, where the user types
// the code a device shows and allows it (RFC 8628 section 3.3).
func (a *API) pageDevice(w http.ResponseWriter, r *http.Request) {
	d := a.page(w, r, "Sign in a device")
	if d.UserID == "" {
		d.Next = r.URL.RequestURI()
		a.render(w, http.StatusOK, "login", d)
		return
	}
	if r.Method == http.MethodPost {
		a.pageDeviceDecide(w, r, d)
		return
	}
	code := r.URL.Query().Get("user_code")
	if code == "" {
		a.render(w, http.StatusOK, "device", d)
		return
	}
	key := "user-code:" + a.clientIP(r)
	if err := checkLimit(a.loginFailures, key); err != nil {
		a.pageError(w, r, d, "device", err)
		return
	}
	pending, err := a.oauth.PendingDeviceGrant(r.Context(), code)
	if err != nil {
		a.pageError(w, r, d, "message", err)
		return
	}
	if pending == nil {
		a.loginFailures.Allow(key) // guessing codes backs off
		d.Username, d.Error = code, "That code is unknown or has expired."
		a.render(w, http.StatusNotFound, "device", d)
		return
	}
	d.Title, d.Client, d.DeviceID, d.Action = "Allow access", pending.Client, pending.DeviceID, pathDevicePage
	d.Params = url.Values{"user_code": {pending.UserCode}}
	a.render(w, http.StatusOK, "consent", d)
}

func (a *API) pageDeviceDecide(w http.ResponseWriter, r *http.Request, d *pageData) {
	if !a.checkCSRF(w, r, d) {
		return
	}
	approve := r.PostForm.Get("action") == "approve"
	ok, err := a.oauth.DecideDeviceGrant(r.Context(), r.PostForm.Get("user_code"), d.UserID, approve)
	if err != nil {
		a.pageError(w, r, d, "message", err)
		return
	}
	switch {
	case !ok:
		d.Error = "That code is unknown or has expired."
		a.render(w, http.StatusNotFound, "device", d)
	case approve:
		d.Title, d.Message = "Device signed in", "You can go back to your device now."
		a.render(w, http.StatusOK, "message", d)
	default:
		d.Title, d.Message = "Access denied", "The device was not signed in."
		a.render(w, http.StatusOK, "message", d)
	}
}
