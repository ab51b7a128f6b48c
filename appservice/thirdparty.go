package appservice

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sync"
)

// Third-party lookups: the client API's /thirdparty endpoints are answered
// by the services that bridge the protocol, through their
// /_matrix/app/v1/thirdparty API. A service that fails or answers badly
// is left out, as Synapse does: the others' answers still count.
// https://spec.matrix.org/v1.19/application-service-api/#third-party-networks

// ForProtocol lists the services that declare the protocol.
func (s *Set) ForProtocol(protocol string) []*Registration {
	var out []*Registration
	for _, r := range s.All() {
		if slices.Contains(r.Protocols, protocol) {
			out = append(out, r)
		}
	}
	return out
}

// Protocols lists every protocol a service declares.
func (s *Set) Protocols() []string {
	var out []string
	for _, r := range s.All() {
		for _, p := range r.Protocols {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// InstanceID is the third_party_instance_id of one service's network, the
// form Synapse gives protocol instances: "{service id}|{network id}".
func InstanceID(serviceID, networkID string) string { return serviceID + "|" + networkID }

// ask sends the same GET to each service and keeps the 200 answers.
func (c *Client) ask(ctx context.Context, regs []*Registration, path string, query url.Values) [][]byte {
	out := make([][]byte, len(regs))
	var wg sync.WaitGroup
	for i, r := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, raw, err := c.Do(ctx, r, http.MethodGet, path, query, nil)
			if err == nil && status == http.StatusOK {
				out[i] = raw
			}
		}()
	}
	wg.Wait()
	return out
}

// Protocol asks the services of a protocol for its metadata and merges
// their answers: the first answer's fields, with the instances of all,
// each given its instance_id. ok is false when no service answered.
func (c *Client) Protocol(ctx context.Context, set *Set, protocol string) (map[string]any, bool) {
	regs := set.ForProtocol(protocol)
	var merged map[string]any
	var instances []any
	for i, raw := range c.ask(ctx, regs, "/_matrix/app/v1/thirdparty/protocol/"+url.PathEscape(protocol), nil) {
		var p map[string]any
		if raw == nil || json.Unmarshal(raw, &p) != nil || p == nil {
			continue
		}
		if merged == nil {
			merged = p
		}
		list, _ := p["instances"].([]any)
		for _, inst := range list {
			m, ok := inst.(map[string]any)
			if !ok {
				continue
			}
			if nid, ok := m["network_id"].(string); ok {
				m["instance_id"] = InstanceID(regs[i].ID, nid)
			}
			instances = append(instances, m)
		}
	}
	if merged == nil {
		return nil, false
	}
	if instances == nil {
		instances = []any{}
	}
	merged["instances"] = instances
	return merged, true
}

// Lookup asks the services for third-party locations or users: kind is
// "location" or "user"; protocol "" is a reverse lookup (by alias or user
// ID), asked of every service that declares a protocol. The answers are
// concatenated.
func (c *Client) Lookup(ctx context.Context, set *Set, kind, protocol string, query url.Values) []json.RawMessage {
	path := "/_matrix/app/v1/thirdparty/" + kind
	var regs []*Registration
	if protocol != "" {
		path += "/" + url.PathEscape(protocol)
		regs = set.ForProtocol(protocol)
	} else {
		for _, r := range set.All() {
			if len(r.Protocols) > 0 {
				regs = append(regs, r)
			}
		}
	}
	out := []json.RawMessage{}
	for _, raw := range c.ask(ctx, regs, path, query) {
		var list []json.RawMessage
		if raw != nil && json.Unmarshal(raw, &list) == nil {
			out = append(out, list...)
		}
	}
	return out
}
