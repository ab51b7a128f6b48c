package syncapi

import "context"

// presenceStream will deliver m.presence. Not served yet: it reports nothing.
type presenceStream struct{}

func newPresenceStream() stream { return presenceStream{} }

func (presenceStream) current(context.Context) (int64, error) { return 0, nil }
func (presenceStream) fill(context.Context, *syncContext, int64, int64) (bool, error) {
	return false, nil
}
