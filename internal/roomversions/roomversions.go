// Package roomversions is the one list of the room versions Tessera
// supports and how stable each is. /capabilities advertises it, and
// createRoom, room upgrades and federation joins accept exactly it.
//
// gomatrixserverlib's own Stable() flag is not used: it marks some
// experimental (MSC) versions as stable, and the spec says only the
// versions it defines may be called stable.
// https://spec.matrix.org/v1.19/rooms/#complete-list-of-room-versions
package roomversions

import (
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Stability is how /capabilities describes a version.
type Stability string

// The two stabilities the spec defines for m.room_versions.
const (
	Stable   Stability = "stable"
	Unstable Stability = "unstable"
)

// specStable are the versions the spec defines, all stable.
var specStable = []gomatrixserverlib.RoomVersion{
	gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2, gomatrixserverlib.RoomVersionV3,
	gomatrixserverlib.RoomVersionV4, gomatrixserverlib.RoomVersionV5, gomatrixserverlib.RoomVersionV6,
	gomatrixserverlib.RoomVersionV7, gomatrixserverlib.RoomVersionV8, gomatrixserverlib.RoomVersionV9,
	gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12,
}

// unstable are the experimental versions gomatrixserverlib implements
// that Tessera can run too. Pseudo-ID rooms (MSC4014) are left out: they
// need per-room sender keys, which Tessera does not have.
var unstable = []gomatrixserverlib.RoomVersion{
	gomatrixserverlib.RoomVersionHydra,
}

var supported = func() map[gomatrixserverlib.RoomVersion]Stability {
	m := make(map[gomatrixserverlib.RoomVersion]Stability, len(specStable)+len(unstable))
	for _, v := range specStable {
		m[v] = Stable
	}
	for _, v := range unstable {
		m[v] = Unstable
	}
	for v := range m {
		if !gomatrixserverlib.KnownRoomVersion(v) {
			panic(fmt.Sprintf("roomversions: gomatrixserverlib does not implement room version %q", v))
		}
	}
	return m
}()

// Available returns every supported version and its stability, for
// /capabilities. The map is a copy.
func Available() map[gomatrixserverlib.RoomVersion]Stability {
	out := make(map[gomatrixserverlib.RoomVersion]Stability, len(supported))
	for v, s := range supported {
		out[v] = s
	}
	return out
}

// List returns the supported versions, stable ones first, for a
// federation make_join/make_knock `ver` list.
func List() []gomatrixserverlib.RoomVersion {
	out := make([]gomatrixserverlib.RoomVersion, 0, len(supported))
	out = append(out, specStable...)
	return append(out, unstable...)
}

// IsStable reports whether v is a version the spec defines as stable.
func IsStable(v gomatrixserverlib.RoomVersion) bool { return supported[v] == Stable }

// Supported reports whether Tessera supports room version v.
func Supported(v gomatrixserverlib.RoomVersion) bool {
	_, ok := supported[v]
	return ok
}

// Get returns the implementation of a supported version, or 400
// M_UNSUPPORTED_ROOM_VERSION. An empty version is not a version: callers
// that have a default apply it before asking.
func Get(v gomatrixserverlib.RoomVersion) (gomatrixserverlib.IRoomVersion, error) {
	if !Supported(v) {
		return nil, &mxerr.Error{Status: 400, Code: "M_UNSUPPORTED_ROOM_VERSION",
			Message: fmt.Sprintf("Room version %q is not supported by this server", v)}
	}
	return gomatrixserverlib.MustGetRoomVersion(v), nil
}
