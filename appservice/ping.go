package appservice

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// PingTimeout bounds a ping of a service, unless Client.PingTimeout says
// otherwise.
const PingTimeout = 15 * time.Second

// Ping calls the service's POST /_matrix/app/v1/ping and measures how long
// it took. The errors are those the client-server ping endpoint answers
// with: 400 M_URL_NOT_SET, 502 M_BAD_STATUS (with the service's status and
// body), 502 M_CONNECTION_FAILED, 504 M_CONNECTION_TIMEOUT.
// https://spec.matrix.org/v1.19/application-service-api/#post_matrixappv1ping
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv1appserviceappserviceidping
func (c *Client) Ping(ctx context.Context, r *Registration, txnID string) (time.Duration, error) {
	timeout := c.PingTimeout
	if timeout <= 0 {
		timeout = PingTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body := map[string]string{}
	if txnID != "" {
		body["transaction_id"] = txnID
	}
	start := time.Now()
	status, raw, err := c.Do(ctx, r, http.MethodPost, "/_matrix/app/v1/ping", nil, body)
	took := time.Since(start)
	switch {
	case errors.Is(err, ErrNoURL):
		return 0, &mxerr.Error{Status: http.StatusBadRequest, Code: "M_URL_NOT_SET",
			Message: "Application service doesn't have a URL configured"}
	case err != nil && isTimeout(err):
		return 0, &mxerr.Error{Status: http.StatusGatewayTimeout, Code: "M_CONNECTION_TIMEOUT",
			Message: "Connection to application service timed out"}
	case err != nil:
		return 0, &mxerr.Error{Status: http.StatusBadGateway, Code: "M_CONNECTION_FAILED",
			Message: "Connection to application service failed"}
	case status != http.StatusOK:
		return 0, (&mxerr.Error{Status: http.StatusBadGateway, Code: "M_BAD_STATUS",
			Message: fmt.Sprintf("Ping returned status %d", status)}).With("status", status).With("body", string(raw))
	}
	return took, nil
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
