package clientapi_test

// Helpers for the OAuth 2.0 API tests: a browser (cookie jar, no automatic
// redirects) that fills the server's pages, and golang.org/x/oauth2 as the
// client.

import (
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tessera-hs/tessera/internal/testserver"
)

const (
	scopeAPI    = "urn:matrix:client:api:*"
	loopbackURI = "http://127.0.0.1/callback"
)

// browser is a user agent on the server's pages.
type browser struct {
	t   testing.TB
	srv *testserver.Server
	c   *http.Client
}

func newBrowser(t testing.TB, srv *testserver.Server) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, srv: srv, c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// page is a fetched page: status, HTML, redirect target.
type page struct {
	Status   int
	HTML     string
	Location string
	Header   http.Header
}

func (b *browser) do(method, target string, form url.Values) page {
	b.t.Helper()
	if strings.HasPrefix(target, "/") {
		target = b.srv.URL + target
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return page{Status: res.StatusCode, HTML: string(raw), Location: res.Header.Get("Location"), Header: res.Header}
}

func (b *browser) get(target string) page { b.t.Helper(); return b.do(http.MethodGet, target, nil) }
func (b *browser) post(target string, form url.Values) page {
	b.t.Helper()
	return b.do(http.MethodPost, target, form)
}

func (p page) expect(t testing.TB, status int) page {
	t.Helper()
	if p.Status != status {
		t.Fatalf("status = %d, want %d; page: %.600s", p.Status, status, p.HTML)
	}
	return p
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

// hidden returns the hidden fields of the page's forms (the last value of
// each name wins; the consent form is the page's first).
func (p page) hidden() url.Values {
	v := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(p.HTML, -1) {
		if v.Has(m[1]) {
			continue
		}
		v.Set(m[1], html.UnescapeString(m[2]))
	}
	return v
}

// login fills the login page p shows and follows the redirect back.
func (b *browser) login(p page, user, password string) page {
	b.t.Helper()
	if !strings.Contains(p.HTML, `name="password"`) {
		b.t.Fatalf("not a login page: %.600s", p.HTML)
	}
	f := p.hidden()
	f.Set("username", user)
	f.Set("password", password)
	res := b.post("/_tessera/login", f).expect(b.t, http.StatusSeeOther)
	return b.get(res.Location)
}

// consent answers the consent page p ("approve" or "deny") and returns
// the redirect to the client.
func (b *browser) consent(p page, action string) *url.URL {
	b.t.Helper()
	if !strings.Contains(p.HTML, "Allow access?") {
		b.t.Fatalf("not a consent page: %.600s", p.HTML)
	}
	f := p.hidden()
	f.Set("action", action)
	res := b.post("/_tessera/oauth2/authorize", f).expect(b.t, http.StatusSeeOther)
	u, err := url.Parse(res.Location)
	if err != nil {
		b.t.Fatal(err)
	}
	return u
}

// registerOAuthClient registers a client and returns its client_id.
func registerOAuthClient(t testing.TB, srv *testserver.Server, md map[string]any) string {
	t.Helper()
	r := post(t, srv, "/_tessera/oauth2/register", "", md)
	if r.Status != http.StatusCreated {
		t.Fatalf("register client: %d %s", r.Status, r.Raw)
	}
	return r.str("client_id")
}

// nativeClient registers a native client with a loopback redirect URI and
// every grant, and returns its golang.org/x/oauth2 config.
func nativeClient(t testing.TB, srv *testserver.Server, scopes ...string) *oauth2.Config {
	t.Helper()
	id := registerOAuthClient(t, srv, map[string]any{
		"client_name": "Test Client", "client_uri": "https://client.example.org/", "application_type": "native",
		"redirect_uris": []string{loopbackURI}, "token_endpoint_auth_method": "none",
		"grant_types": []string{"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"},
	})
	if len(scopes) == 0 {
		scopes = []string{scopeAPI}
	}
	return &oauth2.Config{ClientID: id, RedirectURL: "http://127.0.0.1:4242/callback", Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: srv.URL + "/_tessera/oauth2/authorize", TokenURL: srv.URL + "/_tessera/oauth2/token",
			DeviceAuthURL: srv.URL + "/_tessera/oauth2/device", AuthStyle: oauth2.AuthStyleInParams}}
}

// authorizeCode runs the browser part of the code flow for user and returns
// the code.
func authorizeCode(t testing.TB, b *browser, conf *oauth2.Config, verifier, user, password string) string {
	t.Helper()
	start := b.get(conf.AuthCodeURL("st4te", oauth2.S256ChallengeOption(verifier))).expect(t, http.StatusOK)
	p := start
	if strings.Contains(start.HTML, `name="password"`) {
		p = b.login(start, user, password).expect(t, http.StatusOK)
	}
	to := b.consent(p, "approve")
	if to.Query().Get("state") != "st4te" || to.Query().Get("code") == "" {
		t.Fatalf("redirect to the client = %s, want a code and the state", to)
	}
	return to.Query().Get("code")
}

// tokenForm posts a form to the token endpoint.
func tokenForm(t testing.TB, srv *testserver.Server, form url.Values) resp {
	t.Helper()
	return do(t, srv, req{Method: http.MethodPost, Path: "/_tessera/oauth2/token", Body: form.Encode(),
		Headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}})
}

// oauthError checks an OAuth error answer.
func (r resp) oauthError(t testing.TB, status int, code string) resp {
	t.Helper()
	if r.Status != status || r.str("error") != code {
		t.Fatalf("got %d %s, want %d error=%s", r.Status, r.Raw, status, code)
	}
	return r
}
