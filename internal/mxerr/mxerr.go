// Package mxerr is the Matrix error model: the spec's {"errcode", "error"}
// body with its HTTP status. Domain packages return *Error for conditions a
// client must see (a taken username, a wrong password); any other error is an
// internal failure and the edge answers 500 M_UNKNOWN without leaking detail.
//
// https://spec.matrix.org/v1.19/client-server-api/#standard-error-response
package mxerr

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a client-visible Matrix error.
type Error struct {
	Status  int    // HTTP status
	Code    string // errcode, e.g. M_FORBIDDEN
	Message string // human-readable error
	// Extra holds additional top-level fields of the body, such as
	// retry_after_ms or soft_logout.
	Extra map[string]any
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message) }

// Body is the JSON body of the error.
func (e *Error) Body() map[string]any {
	body := make(map[string]any, 2+len(e.Extra))
	for k, v := range e.Extra {
		body[k] = v
	}
	// A UIA challenge is a 401 with no errcode until a stage has failed.
	if e.Code != "" {
		body["errcode"] = e.Code
		body["error"] = e.Message
	}
	return body
}

// With returns a copy of e with an extra body field.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

// As reports whether err is (or wraps) a Matrix error and returns it.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

func newf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Constructors for the error codes the server uses, each with the status the
// spec gives it.

func Forbidden(format string, a ...any) *Error {
	return newf(http.StatusForbidden, "M_FORBIDDEN", format, a...)
}
func NotFound(format string, a ...any) *Error {
	return newf(http.StatusNotFound, "M_NOT_FOUND", format, a...)
}
func Unrecognized(format string, a ...any) *Error {
	return newf(http.StatusNotFound, "M_UNRECOGNIZED", format, a...)
}
func MethodNotAllowed() *Error {
	return newf(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Method not allowed for this endpoint")
}
func NotJSON(format string, a ...any) *Error {
	return newf(http.StatusBadRequest, "M_NOT_JSON", format, a...)
}
func BadJSON(format string, a ...any) *Error {
	return newf(http.StatusBadRequest, "M_BAD_JSON", format, a...)
}
func InvalidParam(format string, a ...any) *Error {
	return newf(http.StatusBadRequest, "M_INVALID_PARAM", format, a...)
}
func MissingParam(format string, a ...any) *Error {
	return newf(http.StatusBadRequest, "M_MISSING_PARAM", format, a...)
}
func TooLarge(format string, a ...any) *Error {
	return newf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", format, a...)
}
func Unknown(status int, format string, a ...any) *Error {
	return newf(status, "M_UNKNOWN", format, a...)
}

// Unauthorized is a failed user-interactive authentication stage.
func Unauthorized(format string, a ...any) *Error {
	return newf(http.StatusUnauthorized, "M_UNAUTHORIZED", format, a...)
}
func MissingToken() *Error {
	return newf(http.StatusUnauthorized, "M_MISSING_TOKEN", "Missing access token")
}

// UnknownToken is the 401 for a token that is not (or no longer) valid.
// softLogout tells the client whether it may refresh or re-login without
// losing its device (true for an expired access token).
func UnknownToken(softLogout bool) *Error {
	return newf(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Unknown or expired access token").
		With("soft_logout", softLogout)
}

// LimitExceeded is the 429 with the delay the client should wait.
func LimitExceeded(retryAfterMS int64) *Error {
	return newf(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "Too many requests").
		With("retry_after_ms", retryAfterMS)
}
func UserInUse() *Error {
	return newf(http.StatusBadRequest, "M_USER_IN_USE", "User ID already taken")
}
func InvalidUsername(format string, a ...any) *Error {
	return newf(http.StatusBadRequest, "M_INVALID_USERNAME", format, a...)
}
func WeakPassword(format string, a ...any) *Error {
	return newf(http.StatusBadRequest, "M_WEAK_PASSWORD", format, a...)
}
func UserDeactivated() *Error {
	return newf(http.StatusForbidden, "M_USER_DEACTIVATED", "This account has been deactivated")
}

// UserLocked answers every request of an account a server admin locked;
// soft_logout tells the client to keep its data for when it is unlocked.
// https://spec.matrix.org/v1.19/client-server-api/#account-locking
func UserLocked() *Error {
	return newf(http.StatusUnauthorized, "M_USER_LOCKED", "User account has been locked").With("soft_logout", true)
}

// UserSuspended refuses what a suspended account may not do (MSC3823):
// the account can still read, leave rooms and log out.
// https://spec.matrix.org/v1.19/client-server-api/#account-suspension
func UserSuspended(format string, a ...any) *Error {
	return newf(http.StatusForbidden, "M_USER_SUSPENDED", format, a...)
}
func GuestAccessForbidden() *Error {
	return newf(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is not allowed for this endpoint")
}
func ThreePIDDenied() *Error {
	return newf(http.StatusForbidden, "M_THREEPID_DENIED", "Third-party identifiers are not supported on this server")
}
func ThreePIDNotFound() *Error {
	return newf(http.StatusBadRequest, "M_THREEPID_NOT_FOUND", "No such third-party identifier on this account")
}
