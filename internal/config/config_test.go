package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleOptions are the values config.sample.yaml is rendered with.
var sampleOptions = GenerateOptions{ServerName: "example.org", DataDir: "./data", Listen: "127.0.0.1:8008"}

// TestSampleMatchesTemplate keeps config.sample.yaml identical to what
// generate-config writes, so the documented file is the real one.
// Regenerate with: go test ./internal/config -run TestSampleMatchesTemplate -update
func TestSampleMatchesTemplate(t *testing.T) {
	want, err := Render(sampleOptions)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "config.sample.yaml")
	if os.Getenv("UPDATE_SAMPLE") == "1" {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("config.sample.yaml is out of date; regenerate with UPDATE_SAMPLE=1 go test ./internal/config")
	}
	if _, err := Parse(got); err != nil {
		t.Fatalf("config.sample.yaml does not parse: %v", err)
	}
}

// TestEveryKeyDocumented checks that every field of Config appears in the
// template, so no setting is undocumented.
func TestEveryKeyDocumented(t *testing.T) {
	raw, _ := Render(sampleOptions)
	text := string(raw)
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, prefix string) {
		for i := 0; i < ty.NumField(); i++ {
			f := ty.Field(i)
			key := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if !strings.Contains(text, key+":") {
				t.Errorf("config key %s%s is not in the template", prefix, key)
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Duration(0)) {
				walk(f.Type, prefix+key+".")
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "server_name: a.b\nlsten: x\n", `line 2: unknown key "lsten"`},
		{"unknown nested key", "logging:\n  levle: info\n", `line 2: unknown key "logging.levle"`},
		{"bad level", "logging:\n  level: loud\n", "logging.level: expected one of debug, info, warn, error"},
		{"bad format", "logging:\n  format: xml\n", "logging.format: expected text or json"},
		{"bad listen", "listen: nope\n", "listen: expected HOST:PORT"},
		{"bad server name", "server_name: 'bad name'\n", "server_name:"},
		{"bad duration", "auth:\n  access_token_lifetime: soon\n", "expected a duration"},
		{"bad type", "http:\n  max_request_body_bytes: lots\n", `line 2: http.max_request_body_bytes: expected a whole number, got "lots"`},
		{"small body limit", "http:\n  max_request_body_bytes: 10\n", "http.max_request_body_bytes: expected at least 1024"},
		{"bad token", "registration:\n  tokens:\n    - token: 'has space'\n", "registration.tokens[0].token"},
		{"bad expiry", "registration:\n  tokens:\n    - token: ok\n      expires: tomorrow\n", "registration.tokens[0].expires"},
		{"bad rate", "rate_limits:\n  login_failures:\n    per_second: 0\n    burst: 1\n", "rate_limits.login_failures"},
		{"bad public url", "public_baseurl: ftp://x\n", "public_baseurl"},
		{"bad room version", "rooms:\n  default_room_version: '99'\n", "rooms.default_room_version: expected a stable room version"},
		{"fast delegate poll", "calls:\n  delegated_leave_poll_interval: 10ms\n", "calls.delegated_leave_poll_interval: expected at least 100ms"},
		{"short delegate wait", "calls:\n  delegated_leave_connect_timeout: 0s\n", "calls.delegated_leave_connect_timeout: expected at least 1s"},
		{"bad webhooks bot", "webhooks:\n  enabled: true\n  bot_localpart: 'Web Hooks'\n", "webhooks.bot_localpart"},
		{"small webhooks body", "webhooks:\n  enabled: true\n  max_body_bytes: 10\n", "webhooks.max_body_bytes: expected at least 1024"},
		{"bad webhooks rate", "webhooks:\n  enabled: true\n  rate:\n    per_second: 0\n    burst: 1\n", "webhooks.rate"},
		{"email without public url", "push:\n  email:\n    smtp_host: smtp.example.org\n    from: a@example.org\n", "push.email: public_baseurl"},
		{"email bad from", "public_baseurl: https://x.org\npush:\n  email:\n    smtp_host: smtp.example.org\n    from: nobody\n", "push.email.from"},
		{"email bad tls", "public_baseurl: https://x.org\npush:\n  email:\n    smtp_host: smtp.example.org\n    from: a@example.org\n    tls: maybe\n", "push.email.tls"},
		{"email password in clear", "public_baseurl: https://x.org\npush:\n  email:\n    smtp_host: smtp.example.org\n    from: a@example.org\n    tls: none\n    password: p\n", "push.email.tls: none"},
		{"email in clear to another host", emailYAML + "    tls: none\n", "set allow_plaintext"},
		{"email synapse keys contradict", emailYAML + "    enable_tls: false\n    force_tls: true\n", "push.email: enable_tls: false contradicts"},
		{"email tls contradicts synapse", emailYAML + "    tls: none\n    allow_plaintext: true\n    force_tls: true\n", "push.email.tls: none contradicts"},
		{"email ca_file without tls", emailYAML + "    tls: none\n    allow_plaintext: true\n    ca_file: ca.pem\n", "need tls: starttls or tls"},
		{"email ca_file and skip verify", emailYAML + "    ca_file: ca.pem\n    insecure_skip_verify: true\n", "contradict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

// emailYAML is an email section that is valid alone.
const emailYAML = "public_baseurl: https://x.org\npush:\n  email:\n    smtp_host: smtp.example.org\n    from: a@example.org\n"

// TestPushEmailTLSModes: the TLS mode from tls or from Synapse's keys.
func TestPushEmailTLSModes(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"default", "", "starttls"},
		{"tls", "    tls: tls\n", "tls"},
		{"plaintext allowed", "    tls: none\n    allow_plaintext: true\n", "none"},
		{"force_tls", "    force_tls: true\n", "tls"},
		{"require_transport_security", "    require_transport_security: true\n", "starttls"},
		{"synapse default is required starttls", "    enable_tls: true\n    require_transport_security: false\n", "starttls"},
		{"enable_tls false", "    enable_tls: false\n    allow_plaintext: true\n", "none"},
		{"tls agrees with synapse", "    tls: tls\n    force_tls: true\n", "tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(emailYAML + tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Push.Email.TLS != tt.want {
				t.Fatalf("tls = %q, want %q", cfg.Push.Email.TLS, tt.want)
			}
		})
	}
	local, err := Parse([]byte(strings.Replace(emailYAML, "smtp.example.org", "127.0.0.1", 1) + "    tls: none\n"))
	if err != nil || local.Push.Email.TLS != "none" {
		t.Fatalf("none to loopback: %v", err)
	}
}

func TestParseDefaultsAndValues(t *testing.T) {
	cfg, err := Parse([]byte("server_name: 'chat.example.org:8448'\nauth:\n  access_token_lifetime: 90s\n  refresh_token_lifetime: 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "chat.example.org:8448" || cfg.Auth.AccessTokenLifetime.Std() != 90*time.Second ||
		cfg.Auth.RefreshTokenLifetime != 0 || cfg.Logging.Level != "info" || !cfg.RateLimits.Enabled {
		t.Fatalf("unexpected config: %+v", cfg)
	}
	empty, err := Parse(nil)
	if err != nil || empty.ServerName != "localhost" {
		t.Fatalf("empty file: %+v, %v", empty, err)
	}
}

func TestLoadResolvesPaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.yaml")
	cfg, err := Generate(GenerateOptions{ServerName: "x.test", DataDir: "d", Listen: "127.0.0.1:0"}, path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != filepath.Join(dir, "d") || cfg.Database.Path != filepath.Join(dir, "d", "tessera.db") ||
		cfg.SigningKeyPath != filepath.Join(dir, "d", "signing.key") {
		t.Fatalf("paths: %s %s %s", cfg.DataDir, cfg.Database.Path, cfg.SigningKeyPath)
	}
	if cfg.Registration.SharedSecret == "" || cfg.Registration.Open {
		t.Fatalf("defaults: secret %q open %v", cfg.Registration.SharedSecret, cfg.Registration.Open)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file mode: %v %v", fi, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing file error: %v", err)
	}
}

func TestInstances(t *testing.T) {
	const base = "server_name: example.org\ndata_dir: /tmp/x\n"
	const pg = "database: {engine: postgres, dsn: \"postgres://x/y\"}\n"
	const secret = "instance_secret: 0123456789abcdef0123456789abcdef\n"
	const two = "instances: {a: {internal_url: \"http://10.0.0.1:8008\"}, b: {internal_url: \"http://10.0.0.2:8008\"}}\n"
	for _, tc := range []struct {
		name, yaml, err, checkErr string
	}{
		{"none", base, "", ""},
		{"ok", base + pg + secret + two, "", "instance: this deployment has an instances map"},
		{"ok with name", base + pg + secret + two + "instance: b\n", "", ""},
		{"sqlite", base + secret + two, "instances: several processes need database.engine postgres", ""},
		{"short secret", base + pg + two + "instance_secret: short\n", "instance_secret: expected at least 32", ""},
		{"bad url", base + pg + secret + "instances: {a: {internal_url: \"10.0.0.1:8008\"}}\n", "instances.a.internal_url", ""},
		{"unknown name", base + pg + secret + two + "instance: c\n", `instance: "c" is not in the instances map`, ""},
		{"name without map", base + "instance: a\n", `instance: "a" is set but there is no instances map`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.yaml))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.CheckInstance()
			if (err == nil) != (tc.checkErr == "") || err != nil && !strings.Contains(err.Error(), tc.checkErr) {
				t.Fatalf("CheckInstance: %v, want %q", err, tc.checkErr)
			}
		})
	}
}
