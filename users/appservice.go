package users

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/tessera-hs/tessera/appservice"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Application services acting as users: an as_token authenticates as the
// service's sender, or as any user of its namespaces named by ?user_id=.
// https://spec.matrix.org/v1.19/application-service-api/#identity-assertion

// SetAppServices gives the service the registered application services.
// Called once at start, before requests are served.
func (s *Service) SetAppServices(set *appservice.Set) { s.appServices = set }

// AppServices are the registered application services (nil for none).
func (s *Service) AppServices() *appservice.Set { return s.appServices }

// AppService is the registration a requester acts for, nil for a
// requester that is not an application service.
func (s *Service) AppService(who *Requester) *appservice.Registration {
	if who == nil || who.AppService == "" {
		return nil
	}
	return s.appServices.ByID(who.AppService)
}

// EnsureAppServiceSenders creates the sender account of every registered
// service that has none yet, as Synapse does at start.
func (s *Service) EnsureAppServiceSenders(ctx context.Context) error {
	for _, r := range s.appServices.All() {
		if _, err := s.Account(ctx, r.SenderUserID(string(s.cfg.ServerName))); err == nil {
			continue
		} else if e, ok := mxerr.As(err); !ok || e.Code != "M_NOT_FOUND" {
			return fmt.Errorf("application service %s: look up its sender: %w", r.ID, err)
		}
		_, err := s.CreateAccount(ctx, NewAccount{Localpart: r.SenderLocalpart, AppService: r.ID})
		if err != nil {
			if e, ok := mxerr.As(err); !ok || e.Code != "M_USER_IN_USE" {
				return fmt.Errorf("application service %s: create its sender %s: %w", r.ID, r.SenderLocalpart, err)
			}
		}
	}
	return nil
}

// Assertion is what an application service's request asserts: the user
// (?user_id=) and the device (?device_id=, MSC4326/MSC3202) it acts as.
type Assertion struct {
	UserID   string
	DeviceID string
}

// AuthenticateAs authenticates an access token like Authenticate; an
// application service's as_token acts as the asserted user and device.
// For any other token the assertion is ignored, as in Synapse.
func (s *Service) AuthenticateAs(ctx context.Context, token string, client ClientInfo, as Assertion) (*Requester, error) {
	if reg := s.appServices.ByASToken(token); reg != nil {
		return s.appServiceRequester(ctx, reg, as)
	}
	return s.Authenticate(ctx, token, client)
}

// appServiceRequester checks an application service's assertion.
func (s *Service) appServiceRequester(ctx context.Context, reg *appservice.Registration, as Assertion) (*Requester, error) {
	server := string(s.cfg.ServerName)
	userID := as.UserID
	if userID == "" {
		userID = reg.SenderUserID(server)
	}
	if !strings.HasSuffix(userID, ":"+server) || !strings.HasPrefix(userID, "@") {
		return nil, mxerr.Forbidden("Application service cannot masquerade as a user of another server (%s)", userID)
	}
	if !reg.OwnsUser(userID, server) {
		return nil, mxerr.Forbidden("Application service cannot masquerade as this user (%s)", userID)
	}
	acc, err := s.Account(ctx, userID)
	if err != nil {
		if e, ok := mxerr.As(err); ok && e.Code == "M_NOT_FOUND" {
			return nil, mxerr.Forbidden("Application service has not registered this user (%s)", userID)
		}
		return nil, err
	}
	restr, err := s.Restrictions(ctx, userID)
	if err != nil {
		return nil, err
	}
	who := &Requester{UserID: userID, IsAdmin: acc.IsAdmin, AppService: reg.ID, Restrictions: restr}
	// Device masquerading (MSC4326) is open to every service, as user
	// masquerading is; a device the user does not have is refused.
	if as.DeviceID != "" {
		if _, err := s.Device(ctx, userID, as.DeviceID); err != nil {
			if e, ok := mxerr.As(err); ok && e.Code == "M_NOT_FOUND" {
				return nil, &mxerr.Error{Status: http.StatusBadRequest, Code: "M_UNKNOWN_DEVICE",
					Message: fmt.Sprintf("Application service trying to use a device that does not exist (%s of %s)", as.DeviceID, userID)}
			}
			return nil, err
		}
		who.DeviceID = as.DeviceID
	}
	return who, nil
}

// errExclusive is the refusal of a user ID or alias another service
// reserved.
func errExclusive(format string, a ...any) *mxerr.Error {
	return &mxerr.Error{Status: http.StatusBadRequest, Code: "M_EXCLUSIVE", Message: fmt.Sprintf(format, a...)}
}

// checkExclusive refuses a new account in an application service's
// exclusive namespace to anyone but that service (appService is the id of
// the service registering it, "" for anyone else). A service may register
// only users of its own namespaces.
func (s *Service) checkExclusive(userID, appService string) error {
	if appService != "" {
		reg := s.appServices.ByID(appService)
		if reg == nil || !reg.OwnsUser(userID, string(s.cfg.ServerName)) {
			return errExclusive("User ID %s is not in the application service's namespace", userID)
		}
	}
	if owner := s.appServices.ExclusiveUserOwner(userID); owner != nil && owner.ID != appService {
		return errExclusive("User ID %s is reserved by an application service", userID)
	}
	return nil
}

// AppServiceLogin is m.login.application_service: the service whose
// as_token the request carries logs in as a user of its namespaces that
// exists. Services that manage devices themselves (MSC4190) do not log in.
// https://spec.matrix.org/v1.19/client-server-api/#appservice-login
func (s *Service) AppServiceLogin(ctx context.Context, token, identifier string) (string, error) {
	reg := s.appServices.ByASToken(token)
	if reg == nil {
		return "", mxerr.UnknownToken(false)
	}
	if reg.MSC4190 {
		return "", ErrAppServiceLoginUnsupported()
	}
	userID, err := s.ResolveUser(identifier)
	if err != nil {
		return "", err
	}
	if !reg.OwnsUser(userID, string(s.cfg.ServerName)) {
		return "", errExclusive("User ID %s is not in the application service's namespaces", userID)
	}
	acc, err := s.Account(ctx, userID)
	if err != nil {
		if e, ok := mxerr.As(err); ok && e.Code == "M_NOT_FOUND" {
			return "", mxerr.Forbidden("Application service has not registered this user (%s)", userID)
		}
		return "", err
	}
	if acc.Deactivated {
		return "", mxerr.UserDeactivated()
	}
	return userID, nil
}

// ErrAppServiceLoginUnsupported refuses logins (and registrations that
// would log in) to services that manage their devices (MSC4190): the
// spec's code since v1.17.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3login
func ErrAppServiceLoginUnsupported() *mxerr.Error {
	return &mxerr.Error{Status: http.StatusBadRequest, Code: "M_APPSERVICE_LOGIN_UNSUPPORTED",
		Message: "This application service manages its devices (MSC4190): use inhibit_login and device masquerading"}
}

// CreateDevice creates a device without tokens, for an application
// service that manages its users' devices (MSC4190). It reports whether
// the device is new; an existing device is renamed when a name is given.
func (s *Service) CreateDevice(ctx context.Context, userID, deviceID string, displayName *string) (bool, error) {
	if err := ValidateDeviceID(deviceID); err != nil {
		return false, err
	}
	if deviceID == "" {
		return false, mxerr.MissingParam("device_id is required")
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts)
		VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id) DO NOTHING`, userID, deviceID, displayName, s.nowMS())
	if err != nil {
		return false, fmt.Errorf("create device: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, nil
	}
	if displayName != nil {
		return false, s.SetDeviceDisplayName(ctx, userID, deviceID, *displayName)
	}
	return false, nil
}
