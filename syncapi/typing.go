package syncapi

import "context"

// typingStream will deliver m.typing. Not served yet: it reports nothing.
type typingStream struct{}

func newTypingStream() stream { return typingStream{} }

func (typingStream) current(context.Context) (int64, error) { return 0, nil }
func (typingStream) fill(context.Context, *syncContext, int64, int64) (bool, error) {
	return false, nil
}
