package keys

import "github.com/tessera-hs/tessera/internal/mxerr"

// MaxRequestEntries bounds the users and devices of one key query or
// claim, from a client or another server.
const MaxRequestEntries = 10000

// CheckQuery checks the device_keys of a key query: 400 M_MISSING_PARAM
// when absent, 413 M_TOO_LARGE over MaxRequestEntries.
func CheckQuery(deviceKeys map[string][]string) error {
	if deviceKeys == nil {
		return mxerr.MissingParam("device_keys is required")
	}
	n := 0
	for _, devs := range deviceKeys {
		n += 1 + len(devs)
	}
	if n > MaxRequestEntries {
		return mxerr.TooLarge("Too many users and devices in one query")
	}
	return nil
}

// CheckClaim checks the one_time_keys of a key claim, as CheckQuery does
// a query.
func CheckClaim(oneTimeKeys map[string]map[string]string) error {
	if oneTimeKeys == nil {
		return mxerr.MissingParam("one_time_keys is required")
	}
	n := 0
	for _, devs := range oneTimeKeys {
		n += 1 + len(devs)
	}
	if n > MaxRequestEntries {
		return mxerr.TooLarge("Too many users and devices in one claim")
	}
	return nil
}
