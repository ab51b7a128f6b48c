package clientapi

import (
	"github.com/tessera-hs/tessera/keybackup"
)

// SetKeyBackup installs the server-side key backup store; call it once,
// before serving requests.
func (a *API) SetKeyBackup(b *keybackup.Service) { a.keyBackup = b }

// keyBackupRoutes are the /room_keys endpoints.
// https://spec.matrix.org/v1.19/client-server-api/#server-side-key-backups
func (a *API) keyBackupRoutes() []route {
	return nil
}
