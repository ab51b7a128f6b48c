package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadAppServiceStopsStart: a registration file that is bad, or clashes
// with another, stops `tessera run` with one line naming the file and the
// field; good files start.
// https://spec.matrix.org/v1.19/application-service-api/#registration
func TestBadAppServiceStopsStart(t *testing.T) {
	good := func(id, token, sender, regex string) string {
		return "id: " + id + "\nurl: null\nas_token: " + token + "\nhs_token: hs-" + token +
			"\nsender_localpart: " + sender + "\nnamespaces:\n  users: [{exclusive: true, regex: '" + regex + "'}]\n"
	}
	cases := []struct {
		name  string
		files map[string]string
		want  []string // in the error line; none: the server starts
	}{
		{"missing field", map[string]string{"a.yaml": "id: a\nurl: null\nhs_token: h\nsender_localpart: a\n"},
			[]string{"a.yaml", "as_token"}},
		{"bad regex", map[string]string{"a.yaml": good("a", "ta", "abot", "@a_[.*")}, []string{"a.yaml", "namespaces.users[0].regex"}},
		{"duplicate id", map[string]string{"a.yaml": good("same", "ta", "abot", "@a_.*"), "b.yaml": good("same", "tb", "bbot", "@b_.*")},
			[]string{"b.yaml", "id"}},
		{"duplicate as_token", map[string]string{"a.yaml": good("a", "tok", "abot", "@a_.*"), "b.yaml": good("b", "tok", "bbot", "@b_.*")},
			[]string{"b.yaml", "as_token"}},
		{"overlapping namespaces", map[string]string{"a.yaml": good("a", "ta", "abot", "@x_.*"), "b.yaml": good("b", "tb", "bbot", "@x_.*")},
			[]string{"b.yaml", "namespaces.users"}},
		{"no such file", map[string]string{}, []string{"missing.yaml"}},
		{"good", map[string]string{"a.yaml": good("a", "ta", "abot", "@a_.*"), "b.yaml": good("b", "tb", "bbot", "@b_.*")}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := generate(t, dir)
			var names []string
			for _, n := range []string{"a.yaml", "b.yaml"} {
				if body, ok := c.files[n]; ok {
					if err := os.WriteFile(filepath.Join(dir, n), []byte(body), 0o600); err != nil {
						t.Fatal(err)
					}
					names = append(names, n)
				}
			}
			if len(c.files) == 0 {
				names = []string{"missing.yaml"}
			}
			cfg, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			cfg = []byte(strings.Replace(string(cfg), "app_services: []", "app_services: ["+strings.Join(names, ", ")+"]", 1))
			if err := os.WriteFile(path, cfg, 0o600); err != nil {
				t.Fatal(err)
			}
			if c.want == nil {
				r := start(t, dir, "run", "-config", path)
				r.stop(t)
				return
			}
			_, stderr, code := tessera(t, dir, "run", "-config", path)
			if code == 0 {
				t.Fatalf("started with a bad registration")
			}
			var line string
			for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
				if strings.Contains(l, "application service") {
					line = l
				}
			}
			for _, w := range c.want {
				if !strings.Contains(line, w) {
					t.Fatalf("error line %q does not name %q; stderr:\n%s", line, w, stderr)
				}
			}
		})
	}
}
