// Package cluster is what the processes of a deployment that runs several
// on one PostgreSQL database (docs/scaling.md) agree on without talking:
// the instance map, who owns which room, and the forwarding of a client's
// write to the room's owner.
package cluster

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/tessera-hs/tessera/internal/config"
)

// Map is the deployment's instance map, seen from one process.
type Map struct {
	self   string
	names  []string // sorted: an instance's index is its place here
	urls   map[string]*url.URL
	secret string
	client *http.Client // for Call
}

// New builds the map from the config; nil when the config has no
// instances map (one process, as usual).
func New(cfg *config.Config) (*Map, error) {
	if len(cfg.Instances) == 0 {
		return nil, nil
	}
	if err := cfg.CheckInstance(); err != nil {
		return nil, err
	}
	m := &Map{self: cfg.Instance, urls: map[string]*url.URL{}, secret: cfg.InstanceSecret, client: &http.Client{}}
	for name, inst := range cfg.Instances {
		u, err := url.Parse(inst.InternalURL)
		if err != nil {
			return nil, fmt.Errorf("instances.%s.internal_url: %w", name, err)
		}
		m.names = append(m.names, name)
		m.urls[name] = u
	}
	slices.Sort(m.names)
	return m, nil
}

// Self is this process's name.
func (m *Map) Self() string { return m.self }

// Index is this process's place in the sorted list of names, which every
// process computes alike: it partitions IDs between them.
func (m *Map) Index() int { return slices.Index(m.names, m.self) }

// Size is the number of instances.
func (m *Map) Size() int { return len(m.names) }

// Owner is the instance that owns key (a room ID, a user ID, a server
// name), by rendezvous hashing: the name with the highest
// SHA-256(name, 0, key). Every process gets the same answer from the same
// map, and adding an instance moves only the keys the new one wins.
func (m *Map) Owner(key string) string {
	var best string
	var bestScore uint64
	for _, name := range m.names {
		h := sha256.New()
		h.Write([]byte(name))
		h.Write([]byte{0})
		h.Write([]byte(key))
		score := binary.BigEndian.Uint64(h.Sum(nil))
		if best == "" || score > bestScore {
			best, bestScore = name, score
		}
	}
	return best
}

// Owns reports whether this process owns key.
func (m *Map) Owns(key string) bool { return m.Owner(key) == m.self }

// checkSecret reports whether s is the deployment's instance secret.
func (m *Map) checkSecret(s string) bool {
	return subtle.ConstantTimeCompare([]byte(s), []byte(m.secret)) == 1
}
