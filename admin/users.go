package admin

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// LocalUser checks that userID is a well-formed user ID of this server,
// with Synapse's errors.
func (s *Service) LocalUser(userID string) error {
	if _, err := spec.NewUserID(userID, true); err != nil {
		return mxerr.InvalidParam("%s is not a valid user ID", userID)
	}
	if !s.IsLocal(userID) {
		return mxerr.Unknown(http.StatusBadRequest, "Can only look up local users")
	}
	return nil
}

// UserUpdate is PUT /_synapse/admin/v2/users/{userId}'s body: nil fields
// are left alone.
type UserUpdate struct {
	Password      *string `json:"password"`
	LogoutDevices *bool   `json:"logout_devices"`
	DisplayName   *string `json:"displayname"`
	AvatarURL     *string `json:"avatar_url"`
	Admin         *bool   `json:"admin"`
	Deactivated   *bool   `json:"deactivated"`
	// Locked locks the account (401 M_USER_LOCKED to all but logout) or
	// unlocks it.
	Locked *bool `json:"locked"`
}

// PutUser creates an account or changes one, and reports whether it
// created it.
// https://element-hq.github.io/synapse/latest/admin_api/user_admin_api.html#create-or-modify-account
func (s *Service) PutUser(ctx context.Context, actor, userID string, u UserUpdate) (bool, error) {
	if err := s.LocalUser(userID); err != nil {
		return false, err
	}
	acc, err := s.users.Account(ctx, userID)
	if me, ok := mxerr.As(err); ok && me.Code == "M_NOT_FOUND" {
		acc = nil
	} else if err != nil {
		return false, err
	}
	created := acc == nil
	if created {
		uid, _ := spec.NewUserID(userID, true) // checked by LocalUser
		na := users.NewAccount{Localpart: uid.Local(), IsAdmin: u.Admin != nil && *u.Admin}
		if u.Password != nil {
			na.Password = *u.Password
		}
		if u.Deactivated != nil && *u.Deactivated {
			return false, mxerr.InvalidParam("A new account cannot be created deactivated")
		}
		if _, err := s.users.CreateAccount(ctx, na); err != nil {
			return false, err
		}
	} else {
		if u.Deactivated != nil && *u.Deactivated != acc.Deactivated {
			if *u.Deactivated {
				if err := s.users.Deactivate(ctx, userID, false); err != nil {
					return false, err
				}
			} else {
				if u.Password == nil {
					return false, mxerr.Unknown(http.StatusBadRequest, "Must provide a password to re-activate an account.")
				}
				if err := s.users.Reactivate(ctx, userID); err != nil {
					return false, err
				}
			}
		}
		if u.Password != nil {
			logout := u.LogoutDevices == nil || *u.LogoutDevices
			if err := s.users.SetPassword(ctx, userID, *u.Password, "", !logout); err != nil {
				return false, err
			}
		}
		if u.Admin != nil && *u.Admin != acc.IsAdmin {
			if err := s.users.SetAdmin(ctx, userID, *u.Admin); err != nil {
				return false, err
			}
		}
	}
	if u.Locked != nil {
		if err := s.users.SetLocked(ctx, userID, *u.Locked); err != nil {
			return false, err
		}
	}
	for field, v := range map[string]*string{"displayname": u.DisplayName, "avatar_url": u.AvatarURL} {
		if v == nil {
			continue
		}
		raw, _ := json.Marshal(*v)
		if err := s.users.SetProfileField(ctx, userID, field, raw); err != nil {
			return false, err
		}
	}
	action := "modify_user"
	if created {
		action = "create_user"
	}
	fields := logrus.Fields{"password_changed": u.Password != nil}
	if u.Admin != nil {
		fields["server_admin"] = *u.Admin
	}
	if u.Deactivated != nil {
		fields["deactivated"] = *u.Deactivated
	}
	if u.Locked != nil {
		fields["locked"] = *u.Locked
	}
	s.Audit(actor, action, userID, fields)
	return created, nil
}

// existing returns a local account or Synapse's errors for a user ID that
// is not one.
func (s *Service) existing(ctx context.Context, userID string) (*users.Account, error) {
	if err := s.LocalUser(userID); err != nil {
		return nil, err
	}
	acc, err := s.users.Account(ctx, userID)
	if me, ok := mxerr.As(err); ok && me.Code == "M_NOT_FOUND" {
		return nil, mxerr.NotFound("User not found")
	}
	return acc, err
}

// Deactivate deactivates an account; erase also removes its profile.
func (s *Service) Deactivate(ctx context.Context, actor, userID string, erase bool) error {
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	if err := s.users.Deactivate(ctx, userID, erase); err != nil {
		return err
	}
	s.Audit(actor, "deactivate_user", userID, logrus.Fields{"erase": erase})
	return nil
}

// ResetPassword sets a new password, logging out every device unless
// logoutDevices is false.
func (s *Service) ResetPassword(ctx context.Context, actor, userID, password string, logoutDevices bool) error {
	acc, err := s.existing(ctx, userID)
	if err != nil {
		return err
	}
	if acc.Deactivated {
		return mxerr.Unknown(http.StatusBadRequest, "Cannot reset the password of a deactivated user")
	}
	if err := s.users.SetPassword(ctx, userID, password, "", !logoutDevices); err != nil {
		return err
	}
	s.Audit(actor, "reset_password", userID, logrus.Fields{"logout_devices": logoutDevices})
	return nil
}

// SetAdmin grants or removes server admin rights.
func (s *Service) SetAdmin(ctx context.Context, actor, userID string, admin bool) error {
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	if err := s.users.SetAdmin(ctx, userID, admin); err != nil {
		return err
	}
	s.Audit(actor, "set_admin", userID, logrus.Fields{"server_admin": admin})
	return nil
}

// User returns one account as the admin API shows it.
func (s *Service) User(ctx context.Context, userID string) (*users.AdminUser, error) {
	if err := s.LocalUser(userID); err != nil {
		return nil, err
	}
	return s.users.AdminUser(ctx, userID)
}

// Devices lists a user's devices.
func (s *Service) Devices(ctx context.Context, userID string) ([]users.AdminDevice, error) {
	if _, err := s.existing(ctx, userID); err != nil {
		return nil, err
	}
	return s.users.AdminDevices(ctx, userID)
}

// DeleteDevices deletes some of a user's devices (and their tokens).
func (s *Service) DeleteDevices(ctx context.Context, actor, userID string, deviceIDs []string) error {
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	if err := s.users.DeleteDevices(ctx, userID, deviceIDs); err != nil {
		return err
	}
	s.Audit(actor, "delete_devices", userID, logrus.Fields{"devices": deviceIDs})
	return nil
}

// JoinedRooms lists the rooms a user is joined to.
func (s *Service) JoinedRooms(ctx context.Context, userID string) ([]string, error) {
	if _, err := spec.NewUserID(userID, true); err != nil {
		return nil, mxerr.InvalidParam("%s is not a valid user ID", userID)
	}
	return s.rooms.JoinedRooms(ctx, userID)
}

// AccountData returns a user's global and per-room account data.
func (s *Service) AccountData(ctx context.Context, userID string) (map[string]map[string]json.RawMessage, error) {
	if _, err := s.existing(ctx, userID); err != nil {
		return nil, err
	}
	return s.users.AllAccountData(ctx, userID)
}

// UsernameAvailable checks a localpart as registration would.
func (s *Service) UsernameAvailable(ctx context.Context, localpart string) error {
	return s.users.CheckAvailable(ctx, localpart)
}

// ListUsers lists accounts, filtered, ordered and paged.
func (s *Service) ListUsers(ctx context.Context, q users.UserListQuery) ([]users.AdminUser, int, error) {
	return s.users.ListUsers(ctx, q)
}

// CreateDevice makes a device (without tokens) for a user, as bridges and
// admin tools do before they hand its keys over; it reports whether the
// device is new.
func (s *Service) CreateDevice(ctx context.Context, actor, userID, deviceID string) (bool, error) {
	if _, err := s.existing(ctx, userID); err != nil {
		return false, err
	}
	created, err := s.users.CreateDevice(ctx, userID, deviceID, nil)
	if err != nil {
		return false, err
	}
	s.Audit(actor, "create_device", userID, logrus.Fields{"device_id": deviceID})
	return created, nil
}

// RenameDevice changes a device's display name.
func (s *Service) RenameDevice(ctx context.Context, actor, userID, deviceID, name string) error {
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	if err := s.users.SetDeviceDisplayName(ctx, userID, deviceID, name); err != nil {
		return err
	}
	s.Audit(actor, "rename_device", userID, logrus.Fields{"device_id": deviceID})
	return nil
}
