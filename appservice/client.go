package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client makes the server's requests to application services: the
// /_matrix/app/v1 API, authenticated with the service's hs_token as a
// Bearer header (and, for services from before v1.4, as the access_token
// query parameter too, as Synapse still does).
// https://spec.matrix.org/v1.19/application-service-api/#authorization
type Client struct {
	HTTP *http.Client
	// PingTimeout bounds Ping; 0 is the default PingTimeout.
	PingTimeout time.Duration
}

// NewClient returns a client with a bounded timeout per request. The
// services' URLs come from the operator's registration files, so loopback
// and private addresses are allowed (bridges usually run beside the
// server).
func NewClient() *Client {
	return &Client{HTTP: &http.Client{Timeout: 60 * time.Second}}
}

// ErrNoURL is returned for a service registered without a url.
var ErrNoURL = errors.New("application service has no url")

// maxResponse bounds what is read of a service's answer.
const maxResponse = 1 << 20

// Do sends a request to the service: method, the path below its URL
// (e.g. "/_matrix/app/v1/ping"), the query and a JSON body (nil for none).
// It returns the status and the body.
func (c *Client) Do(ctx context.Context, r *Registration, method, path string, query url.Values, body any) (int, []byte, error) {
	if r.URL == nil || *r.URL == "" {
		return 0, nil, ErrNoURL
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := strings.TrimRight(*r.URL, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, fmt.Errorf("application service %s: %w", r.ID, err)
	}
	req.Header.Set("Authorization", "Bearer "+r.HSToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("application service %s: %w", r.ID, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxResponse))
	if err != nil {
		return 0, nil, fmt.Errorf("application service %s: read answer: %w", r.ID, err)
	}
	return res.StatusCode, raw, nil
}
