package keybackup

import (
	"context"
	"testing"

	"github.com/tessera-hs/tessera/internal/database/dbtest"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

func TestBetterThan(t *testing.T) {
	k := func(verified bool, first, forwarded int64) KeyBackupData {
		return KeyBackupData{IsVerified: verified, FirstMessageIndex: first, ForwardedCount: forwarded}
	}
	cases := []struct {
		name     string
		new, old KeyBackupData
		want     bool
	}{
		{"verified beats unverified whatever the rest", k(true, 9, 9), k(false, 0, 0), true},
		{"unverified never beats verified", k(false, 0, 0), k(true, 9, 9), false},
		{"lower first_message_index", k(false, 1, 9), k(false, 2, 0), true},
		{"higher first_message_index", k(true, 3, 0), k(true, 2, 9), false},
		{"lower forwarded_count", k(true, 2, 0), k(true, 2, 1), true},
		{"higher forwarded_count", k(false, 2, 2), k(false, 2, 1), false},
		{"tie keeps the stored key", k(true, 2, 1), k(true, 2, 1), false},
	}
	for _, tc := range cases {
		if got := tc.new.betterThan(tc.old); got != tc.want {
			t.Errorf("%s: betterThan = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for v, want := range map[string]int64{"1": 1, "42": 42, "9007199254740993": 9007199254740993} {
		if n, ok := parseVersion(v); !ok || n != want {
			t.Errorf("parseVersion(%q) = %d, %v; want %d", v, n, ok, want)
		}
	}
	for _, v := range []string{"", "0", "-1", "+1", "01", " 1", "1.0", "1e3", "abc", "99999999999999999999"} {
		if _, ok := parseVersion(v); ok {
			t.Errorf("parseVersion(%q) accepted", v)
		}
	}
}

func TestParseUploadLevels(t *testing.T) {
	key := `{"first_message_index":1,"forwarded_count":0,"is_verified":true,"session_data":{"a": 1}}`
	for _, tc := range []struct {
		body, room, session string
	}{
		{key, "!r:x", "s"},
		{`{"sessions":{"s":` + key + `}}`, "!r:x", ""},
		{`{"rooms":{"!r:x":{"sessions":{"s":` + key + `}}}}`, "", ""},
	} {
		u, err := ParseUpload([]byte(tc.body), tc.room, tc.session)
		if err != nil {
			t.Fatalf("ParseUpload(%s): %v", tc.body, err)
		}
		k, ok := u["!r:x"]["s"]
		if !ok || u.Sessions() != 1 || !k.IsVerified || k.FirstMessageIndex != 1 || string(k.SessionData) != `{"a":1}` {
			t.Fatalf("ParseUpload(%s) = %+v", tc.body, u)
		}
	}
	if _, err := ParseUpload([]byte(`{"rooms":{"!r:x":{"sessions":{"":`+key+`}}}}`), "", ""); err == nil {
		t.Fatalf("empty session ID accepted")
	} else if me, ok := mxerr.As(err); !ok || me.Code != "M_BAD_JSON" {
		t.Fatalf("empty session ID: %v", err)
	}
}

// TestKeyBackupStore runs the service on a real database: a version's
// count and etag follow its keys, and deleting a version deletes them.
func TestKeyBackupStore(t *testing.T) {
	ctx := context.Background()
	db := dbtest.Open(t)
	defer db.Close()
	s, err := New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, db); err != nil {
		t.Fatalf("migrations are not idempotent: %v", err)
	}
	const user = "@a:x"
	v, err := s.CreateVersion(ctx, user, []byte(`{"algorithm":"alg","auth_data":{}}`))
	if err != nil || v != "1" {
		t.Fatalf("CreateVersion = %q, %v", v, err)
	}
	u, err := ParseUpload([]byte(`{"sessions":{"s1":{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{}},
		"s2":{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{}}}}`), "!r:x", "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.PutKeys(ctx, user, v, u)
	if err != nil || res.Count != 2 {
		t.Fatalf("PutKeys = %+v, %v", res, err)
	}
	again, err := s.PutKeys(ctx, user, v, u)
	if err != nil || *again != *res {
		t.Fatalf("PutKeys of the same keys = %+v, %v; want %+v", again, err, res)
	}
	info, err := s.Version(ctx, user, "")
	if err != nil || info.Count != 2 || info.ETag != res.ETag {
		t.Fatalf("Version = %+v, %v", info, err)
	}
	if err := s.DeleteVersion(ctx, user, v); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM keybackup_keys WHERE user_id = $1`, user).Scan(&n); err != nil || n != 0 {
		t.Fatalf("keys left after deleting the version: %d, %v", n, err)
	}
	if _, err := s.Keys(ctx, user, v, "", ""); err == nil {
		t.Fatalf("Keys of a deleted version succeeded")
	}
}
