package testserver

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// EnvRequirePostgres makes the tests that need PostgreSQL (several
// processes on one database) fail rather than skip when none is
// configured, as CI does.
const EnvRequirePostgres = "TESSERA_REQUIRE_POSTGRES"

// MissingPostgres is how a test that needs PostgreSQL reacts when
// TESSERA_TEST_POSTGRES_DSN is not set: a skip on a developer's machine,
// a failure where TESSERA_REQUIRE_POSTGRES is set.
func MissingPostgres(t testing.TB) {
	t.Helper()
	if os.Getenv(dbtest.EnvPostgresDSN) != "" {
		return
	}
	msg := "needs PostgreSQL: eval \"$(.ci/start-postgres)\" (see docs/postgresql.md)"
	if os.Getenv(EnvRequirePostgres) != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// ClusterSecret is the instance secret of test clusters.
const ClusterSecret = "test-instance-secret-0123456789abcdef"

// StartCluster starts the named instances of one deployment
// (docs/scaling.md): one fresh PostgreSQL database, one signing key and one
// server name for all, each instance on its own loopback port and data
// directory. It skips (or fails, see MissingPostgres) without PostgreSQL.
func StartCluster(t testing.TB, names []string, opts ...Option) map[string]*Server {
	t.Helper()
	return startCluster(t, names, nil, opts...)
}

// StartFederatedCluster is StartCluster with federation on: each instance
// has a TLS federation listener of its own on ip, and the deployment's
// server name is the first instance's federation address ("IP:PORT", as
// Federation gives a single server), so that other servers reach the
// deployment through that instance, as through a load balancer.
func StartFederatedCluster(t testing.TB, names []string, ip string, opts ...Option) map[string]*Server {
	t.Helper()
	fed := map[string]string{}
	for _, name := range names {
		fed[name] = freeAddr(t, ip)
	}
	return startCluster(t, names, func(name string, c *config.Config) {
		c.ServerName = fed[names[0]]
		c.Federation.Enabled = true
		c.Federation.Listen = fed[name]
		c.Federation.InsecureSkipTLSVerify = true
	}, opts...)
}

// freeAddr is a free TCP address on ip, given back for a server to bind
// again at once.
func freeAddr(t testing.TB, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startCluster starts the instances, each with the shared settings, then
// each's own (instance, if not nil), then opts.
func startCluster(t testing.TB, names []string, instance func(name string, c *config.Config), opts ...Option) map[string]*Server {
	t.Helper()
	MissingPostgres(t)
	dsn := dbtest.CreatePostgres(t)
	key := filepath.Join(t.TempDir(), "signing.key")
	instances := map[string]config.Instance{}
	addrs := map[string]string{}
	for _, name := range names {
		addrs[name] = freeAddr(t, "127.0.0.1")
		instances[name] = config.Instance{InternalURL: "http://" + addrs[name]}
	}
	out := map[string]*Server{}
	for _, name := range names {
		out[name] = Start(t, append([]Option{func(c *config.Config) {
			c.Database.Engine, c.Database.DSN = "postgres", dsn
			c.Database.MaxOpenConns, c.Database.MaxIdleConns = 6, 2
			c.SigningKeyPath = key
			c.Listen = addrs[name]
			c.Instances, c.Instance, c.InstanceSecret = instances, name, ClusterSecret
			if instance != nil {
				instance(name, c)
			}
		}}, opts...)...)
		if out[name].addr != addrs[name] {
			t.Fatalf("instance %s on %s, want %s", name, out[name].addr, addrs[name])
		}
	}
	return out
}
