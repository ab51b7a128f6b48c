package clientapi

import (
	"net/http"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/oauth"
)

// The account management page behind the metadata's
// account_management_uri: devices, password, deactivation.
// https://spec.matrix.org/v1.19/client-server-api/#oauth-20-account-management

// accountPage starts an account page: signed out, the login page is shown
// instead (coming back here after) and ok is false. A form post must carry
// the CSRF token and, if passwordField is set, the user's password in that
// field, checked under the login rate limits.
func (a *API) accountPage(w http.ResponseWriter, r *http.Request, passwordField string) (*pageData, bool) {
	d := a.page(w, r, "Your account")
	if d.UserID == "" {
		d.Next = pathAccount
		if r.Method == http.MethodGet {
			d.Next = r.URL.RequestURI()
		}
		a.render(w, http.StatusOK, "login", d)
		return d, false
	}
	if r.Method == http.MethodPost && !a.checkCSRF(w, r, d) {
		return d, false
	}
	if passwordField != "" {
		if _, err := a.checkPasswordLogin(r, d.UserID, r.PostForm.Get(passwordField)); err != nil {
			a.accountError(w, r, d, err)
			return d, false
		}
	}
	return d, true
}

// pageAccount shows the account. The spec's action and device_id query
// parameters pick out a device (org.matrix.device_view, device_delete).
func (a *API) pageAccount(w http.ResponseWriter, r *http.Request) {
	d, ok := a.accountPage(w, r, "")
	if !ok {
		return
	}
	a.renderAccount(w, r, d, http.StatusOK)
}

func (a *API) renderAccount(w http.ResponseWriter, r *http.Request, d *pageData, status int) {
	devices, err := a.users.Devices(r.Context(), d.UserID)
	if err != nil {
		a.pageError(w, r, d, "message", err)
		return
	}
	clients, err := a.oauth.ClientNames(r.Context(), d.UserID)
	if err != nil {
		a.pageError(w, r, d, "message", err)
		return
	}
	selected := r.URL.Query().Get("device_id")
	d.CrossSigningReset = r.URL.Query().Get("action") == actionCrossSigningReset
	d.Devices = d.Devices[:0]
	for _, dev := range devices {
		ad := accountDevice{ID: dev.DeviceID, Selected: dev.DeviceID == selected}
		if dev.DisplayName != nil {
			ad.Name = *dev.DisplayName
		}
		if c, ok := clients[dev.DeviceID]; ok && c != ad.Name {
			ad.Name += " (" + c + ")"
		}
		if dev.LastSeenTS != nil {
			ad.LastSeen = time.UnixMilli(*dev.LastSeenTS).UTC().Format("2006-01-02 15:04 UTC")
			if dev.LastSeenIP != nil && *dev.LastSeenIP != "" {
				ad.LastSeen += " from " + *dev.LastSeenIP
			}
		}
		d.Devices = append(d.Devices, ad)
	}
	a.render(w, status, "account", d)
}

// pageDeleteDevice signs one of the user's devices out.
func (a *API) pageDeleteDevice(w http.ResponseWriter, r *http.Request) {
	d, ok := a.accountPage(w, r, "")
	if !ok {
		return
	}
	if err := a.oauth.EndDevice(r.Context(), d.UserID, r.PostForm.Get("device_id")); err != nil {
		a.pageError(w, r, d, "message", err)
		return
	}
	http.Redirect(w, r, pathAccount, http.StatusSeeOther)
}

// pageChangePassword changes the password after checking the current one
// under the login rate limits.
func (a *API) pageChangePassword(w http.ResponseWriter, r *http.Request) {
	d, ok := a.accountPage(w, r, "current_password")
	if !ok {
		return
	}
	logout := r.PostForm.Get("logout_devices") != ""
	if err := a.users.SetPassword(r.Context(), d.UserID, r.PostForm.Get("new_password"), "", !logout); err != nil {
		a.accountError(w, r, d, err)
		return
	}
	d.Title, d.Message = "Password changed", "Your password has been changed."
	if logout {
		d.Message += " All your devices have been signed out."
	}
	a.render(w, http.StatusOK, "message", d)
}

// pageDeactivate deactivates the account after checking the password.
func (a *API) pageDeactivate(w http.ResponseWriter, r *http.Request) {
	d, ok := a.accountPage(w, r, "password")
	if !ok {
		return
	}
	if err := a.users.Deactivate(r.Context(), d.UserID, false); err != nil {
		a.pageError(w, r, d, "message", err)
		return
	}
	if err := a.oauth.EndBrowserSessions(r.Context(), d.UserID, ""); err != nil {
		a.pageError(w, r, d, "message", err)
		return
	}
	a.log.WithField("user_id", d.UserID).Info("account deactivated from the account page")
	a.setCookie(w, r, sessionCookie, "", -1)
	d.UserID, d.Title, d.Message = "", "Account deactivated", "Your account has been deactivated."
	a.render(w, http.StatusOK, "message", d)
}

// accountError shows the account page again with what went wrong.
func (a *API) accountError(w http.ResponseWriter, r *http.Request, d *pageData, err error) {
	me, ok := mxerr.As(err)
	if !ok {
		a.pageError(w, r, d, "message", err)
		return
	}
	d.Error = me.Message
	if me.Code == "M_LIMIT_EXCEEDED" {
		d.Error = "Too many attempts. Wait a while and try again."
	}
	a.renderAccount(w, r, d, me.Status)
}

// pageCrossSigningReset approves, after the password, replacing the
// cross-signing keys for a while: the client's m.oauth UIA stage passes.
func (a *API) pageCrossSigningReset(w http.ResponseWriter, r *http.Request) {
	d, ok := a.accountPage(w, r, "password")
	if !ok {
		return
	}
	if err := a.oauth.ApproveCrossSigningReset(r.Context(), d.UserID); err != nil {
		a.pageError(w, r, d, "message", err)
		return
	}
	d.Title = "Identity reset allowed"
	d.Message = "Go back to your app to finish resetting your identity. The approval lasts " +
		oauth.CrossSigningResetWindow.String() + "."
	a.render(w, http.StatusOK, "message", d)
}
