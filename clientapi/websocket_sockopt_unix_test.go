//go:build unix

package clientapi_test

import (
	"net"
	"net/http"
	"syscall"
	"time"
)

// smallBufferClient dials with a 4 kB socket receive buffer, so that a
// client that stops reading makes the server's writes block soon.
func smallBufferClient() *http.Client {
	d := &net.Dialer{
		Timeout: 10 * time.Second,
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}
