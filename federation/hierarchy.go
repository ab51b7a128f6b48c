package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/roomserver"
)

// maxHierarchyVia bounds the servers asked for one room.
const maxHierarchyVia = 3

// RemoteHierarchy asks the via servers, in turn, for a room of a space we
// do not hold and its children (roomserver.HierarchyFetcher): the first
// answer wins.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1hierarchyroomid
func (a *API) RemoteHierarchy(ctx context.Context, via []spec.ServerName, roomID string, suggestedOnly bool) (*roomserver.SpaceHierarchy, error) {
	var errs []error
	asked := 0
	for _, server := range via {
		if server == a.cfg.ServerName || !a.cfg.allowed(server) {
			continue
		}
		if asked == maxHierarchyVia {
			break
		}
		asked++
		res, err := a.client.RoomHierarchy(ctx, a.cfg.ServerName, server, roomID, suggestedOnly)
		if err != nil {
			errs = append(errs, fmt.Errorf("hierarchy from %s: %w", server, err))
			continue
		}
		// The two types spell the same JSON.
		raw, err := json.Marshal(res)
		if err != nil {
			return nil, err
		}
		var out roomserver.SpaceHierarchy
		if err := json.Unmarshal(raw, &out); err != nil {
			errs = append(errs, fmt.Errorf("hierarchy from %s: %w", server, err))
			continue
		}
		return &out, nil
	}
	if len(errs) == 0 {
		return nil, errors.New("no server to ask")
	}
	return nil, errors.Join(errs...)
}

var _ roomserver.HierarchyFetcher = (*API)(nil)
