//go:build !unix

package clientapi_test

import "net/http"

// smallBufferClient is the default client where the receive buffer cannot
// be set: the slow-reader test then needs the kernel's buffers to fill.
func smallBufferClient() *http.Client { return &http.Client{} }
