package server

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/federation"
	"github.com/tessera-hs/tessera/internal/cluster"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Inbound federation in a cluster (docs/scaling.md): the requests of other
// servers that write to a room (joins, leaves, knocks, invites) are
// forwarded whole to the room's owner, which checks their X-Matrix
// signature itself (the request is unchanged); a transaction's PDUs go to
// their rooms' owners as internal calls.

// opFederationPDUs is the internal call that has the owner ingest PDUs.
const opFederationPDUs = "federation_pdus"

// fedPDUs is its body.
type fedPDUs struct {
	Origin spec.ServerName   `json:"origin"`
	PDUs   []json.RawMessage `json:"pdus"`
}

// fedCluster is the federation edge's share of the deployment; nil for
// one process.
func (s *Server) fedCluster() *federation.Cluster {
	if s.cluster == nil {
		return nil
	}
	return &federation.Cluster{
		Owner: s.cluster.Owner, Self: s.cluster.Self(),
		ReceivePDUs: func(ctx context.Context, instance string, origin spec.ServerName, pdus []json.RawMessage) (map[string]string, error) {
			var out map[string]string
			err := s.cluster.CallJSON(ctx, instance, opFederationPDUs, fedPDUs{Origin: origin, PDUs: pdus}, &out)
			return out, err
		},
	}
}

// fedHandler is the federation listener's handler: in a cluster, the
// room writes of other servers go to the room's owner.
func (s *Server) fedHandler() http.Handler {
	h := s.fedAPI.Handler()
	if s.cluster == nil {
		return h
	}
	noAliases := func(context.Context, string) (string, error) { return "", nil }
	return s.cluster.Forward(s.log, noAliases, h)
}

// registerInternalFederation serves, on the client listener and only to
// the other instances, the federation requests they forward, and the
// PDUs they hand over.
func (s *Server) registerInternalFederation(r *mux.Router) {
	r.PathPrefix("/_matrix/federation/").MatcherFunc(func(r *http.Request, _ *mux.RouteMatch) bool {
		return cluster.FromInstance(r)
	}).Handler(s.fedAPI.Handler())
	r.Methods(http.MethodPost).Path(cluster.InternalPrefix + opFederationPDUs).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cluster.FromInstance(r) {
			httpx.WriteJSON(w, http.StatusForbidden, mxerr.Forbidden("Internal endpoint").Body())
			return
		}
		var req fedPDUs
		if err := httpx.DecodeJSON(r, &req, false); err != nil {
			httpx.WriteJSON(w, http.StatusBadRequest, mxerr.BadJSON("%v", err).Body())
			return
		}
		// Processed to the end even if the caller hangs up, as a
		// transaction is.
		httpx.WriteJSON(w, http.StatusOK, s.fedAPI.ReceivePDUs(context.WithoutCancel(r.Context()), req.Origin, req.PDUs))
	})
}
