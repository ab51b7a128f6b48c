package clientapi

import (
	"github.com/tessera-hs/tessera/keys"
)

// SetKeys installs the end-to-end encryption key store; call it once,
// before serving requests.
func (a *API) SetKeys(k *keys.Service) { a.keys = k }

// keysRoutes are the /keys endpoints.
// https://spec.matrix.org/v1.19/client-server-api/#end-to-end-encryption
func (a *API) keysRoutes() []route {
	return nil
}
