package syncapi

import "context"

// toDeviceStream will deliver to-device messages. Not served yet: it
// reports nothing.
type toDeviceStream struct{}

func newToDeviceStream() stream { return toDeviceStream{} }

func (toDeviceStream) current(context.Context) (int64, error) { return 0, nil }
func (toDeviceStream) fill(context.Context, *syncContext, int64, int64) (bool, error) {
	return false, nil
}
