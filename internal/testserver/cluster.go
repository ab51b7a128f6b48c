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
	MissingPostgres(t)
	dsn := dbtest.CreatePostgres(t)
	key := filepath.Join(t.TempDir(), "signing.key")
	instances := map[string]config.Instance{}
	addrs := map[string]string{}
	for _, name := range names {
		// A free port, given back for the server to bind again at once.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		addrs[name] = l.Addr().String()
		l.Close()
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
		}}, opts...)...)
		if out[name].addr != addrs[name] {
			t.Fatalf("instance %s on %s, want %s", name, out[name].addr, addrs[name])
		}
	}
	return out
}
