package federation

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Several processes on one database (docs/scaling.md): the PDUs of a
// transaction are ingested by their room's owner, whose sequencer holds
// the room's extremities and state, as are the joins, leaves, knocks and
// invites other servers send (those the instances' forwarder sends on
// whole, see internal/cluster).

// Cluster is the federation edge's share of a deployment of several
// processes.
type Cluster struct {
	// Owner is the instance that owns a room, and Self this one.
	Owner func(roomID string) string
	Self  string
	// ReceivePDUs has instance ingest pdus, received from origin in one
	// transaction, and returns the transaction's answer for each: the
	// event ID and "" if it was taken, else the error (ReceivePDUs on
	// the owner).
	ReceivePDUs func(ctx context.Context, instance string, origin spec.ServerName, pdus []json.RawMessage) (map[string]string, error)
}

// splitPDUs groups a transaction's PDUs by the instance that owns their
// room, in their order; those of this instance, and those without a room
// ID (answered as one process answers them), are local.
func (a *API) splitPDUs(pdus []json.RawMessage) (local []json.RawMessage, elsewhere map[string][]json.RawMessage) {
	cl := a.cfg.Cluster
	if cl == nil {
		return pdus, nil
	}
	for _, raw := range pdus {
		var head struct {
			RoomID string `json:"room_id"`
		}
		if json.Unmarshal(raw, &head) != nil || head.RoomID == "" {
			local = append(local, raw)
			continue
		}
		owner := cl.Owner(head.RoomID)
		if owner == cl.Self {
			local = append(local, raw)
			continue
		}
		if elsewhere == nil {
			elsewhere = map[string][]json.RawMessage{}
		}
		elsewhere[owner] = append(elsewhere[owner], raw)
	}
	return local, elsewhere
}

// receiveElsewhere has the owners of the other rooms ingest their PDUs
// and adds their answers to results. An owner that cannot be reached
// fails the whole transaction (502), so that the sender retries it later:
// an answer per PDU would make it drop them. What was ingested meanwhile
// is known when the retry brings it again.
func (a *API) receiveElsewhere(ctx context.Context, origin spec.ServerName, elsewhere map[string][]json.RawMessage, results map[string]any) error {
	for instance, pdus := range elsewhere {
		for len(pdus) > 0 {
			// Calls stay well under the request body limit of the
			// owner's listener (a transaction may be 16 MiB).
			n, size := 0, 0
			for n < len(pdus) && (n == 0 || size+len(pdus[n]) <= maxPDUCallBytes) {
				size += len(pdus[n])
				n++
			}
			res, err := a.cfg.Cluster.ReceivePDUs(ctx, instance, origin, pdus[:n])
			if err != nil {
				a.log.WithError(err).WithFields(map[string]any{"origin": origin, "instance": instance}).
					Warn("handing a transaction's PDUs to their rooms' owner")
				return mxerr.Unknown(http.StatusBadGateway, "Instance %s, which owns some of these rooms, is unavailable; retry later", instance)
			}
			for id, e := range res {
				if e == "" {
					results[id] = struct{}{}
				} else {
					results[id] = map[string]string{"error": e}
				}
			}
			pdus = pdus[n:]
		}
	}
	return nil
}

// maxPDUCallBytes bounds the PDUs of one call to their owner.
const maxPDUCallBytes = 1 << 20

// ReceivePDUs ingests PDUs another instance received from origin in a
// transaction, for rooms this process owns, and returns the answer for
// each (see Cluster.ReceivePDUs).
func (a *API) ReceivePDUs(ctx context.Context, origin spec.ServerName, pdus []json.RawMessage) map[string]string {
	out := make(map[string]string, len(pdus))
	for _, raw := range pdus {
		id, err := a.receivePDU(ctx, origin, raw)
		if id == "" {
			continue
		}
		if err != nil {
			out[id] = err.Error()
		} else {
			out[id] = ""
		}
	}
	return out
}
