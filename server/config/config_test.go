package config

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/repo"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		doc     string
		wantErr string // substring; empty means success
		check   func(t *testing.T, c *v1alpha1.WorkloadConfig)
	}{
		{name: "empty is all defaults", doc: "", check: func(t *testing.T, c *v1alpha1.WorkloadConfig) {
			if c.Listen != v1alpha1.DefaultListen || c.DataDir != v1alpha1.DefaultDataDir || *c.Cache.Shards != 16 ||
				!c.Modules.TasksEnabled() || c.Modules.GatewayEnabled() || c.Server.ShutdownTimeout.Duration != 20*time.Second {
				t.Fatalf("defaults not applied: %+v", c)
			}
		}},
		{name: "comments only", doc: "# nothing\n", check: func(t *testing.T, c *v1alpha1.WorkloadConfig) {
			if c.LogLevel != "info" {
				t.Fatalf("defaults not applied: %+v", c)
			}
		}},
		{name: "full file", doc: `
listen: 0.0.0.0:9000
dataDir: /var/lib/medops
logLevel: debug
modules:
  tasks: {enabled: false}
  gateway:
    enabled: true
    upstreams:
    - name: ensembl
      url: https://rest.ensembl.org
      ttl: 1h
cache:
  size: 32Mi
  shards: 8
  rules:
  - pathPrefix: /api/v1/gateway/ensembl/
    ttl: 10m
auth:
  tokenFile: /etc/medops/token
server:
  maxBodySize: 64Ki
  shutdownDelay: 0s
`, check: func(t *testing.T, c *v1alpha1.WorkloadConfig) {
			if c.Listen != "0.0.0.0:9000" || c.Modules.TasksEnabled() || !c.Modules.GatewayEnabled() ||
				c.Modules.Gateway.Upstreams[0].Timeout.Duration != v1alpha1.DefaultUpstreamTimeout ||
				c.Server.MaxBodySize.Value() != 64<<10 || c.Server.ShutdownDelay.Duration != 0 || c.Auth.TokenFile != "/etc/medops/token" {
				t.Fatalf("file not applied: %+v", c)
			}
		}},
		{name: "json works too", doc: `{"cache":{"shards":4}}`, check: func(t *testing.T, c *v1alpha1.WorkloadConfig) {
			if *c.Cache.Shards != 4 {
				t.Fatal("json not read")
			}
		}},
		{name: "shards not power of two", doc: "cache:\n  shards: 3\n", wantErr: "cache.shards: Invalid value: 3: must be a power of two"},
		{name: "unknown top-level field", doc: "lisen: x\n", wantErr: `lisen: unknown field "lisen"`},
		{name: "unknown nested field", doc: "cache:\n  shardz: 2\n", wantErr: `cache.shardz: unknown field`},
		{name: "unknown field in list item", doc: "modules:\n  gateway:\n    upstreams:\n    - name: a\n      url: http://x\n      bogus: 1\n", wantErr: "modules.gateway.upstreams[0].bogus: unknown field"},
		{name: "wrong type", doc: "cache:\n  shards: many\n", wantErr: "cache.shards: Invalid value"},
		{name: "bad quantity", doc: "server:\n  maxBodySize: 1Zi\n", wantErr: "server.maxBodySize: Invalid value"},
		{name: "bad duration", doc: "cache:\n  ttl: 5 parsecs\n", wantErr: "cache.ttl: Invalid value"},
		{name: "duplicate key", doc: "listen: a\nlisten: b\n", wantErr: `"listen" already set`},
		{name: "not a mapping", doc: "- a\n", wantErr: "must be a mapping"},
		{name: "broken yaml", doc: "a: [\n", wantErr: "invalid YAML"},
		{name: "bad log level", doc: "logLevel: loud\n", wantErr: "logLevel: Unsupported value"},
		{name: "gateway without upstreams", doc: "modules:\n  gateway:\n    enabled: true\n", wantErr: "modules.gateway.upstreams: Required value"},
		{name: "two errors both named", doc: "logLevel: loud\ncache:\n  shards: 3\n", wantErr: "logLevel: Unsupported value: \"loud\": supported values: \"debug\", \"info\", \"warn\", \"error\"; cache.shards"},
		{name: "negative delay", doc: "server:\n  shutdownDelay: -1s\n", wantErr: "server.shutdownDelay: Invalid value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestLoadNamesFileAndField(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.yaml")
	if err := os.WriteFile(p, []byte("cache:\n  shards: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	want := "config " + p + ": cache.shards: Invalid value: 3: must be a power of two"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got %v, want prefix %q", err, want)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestRegionFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  string
		want string
		bad  bool
	}{
		{"none", nil, "", "", false},
		{"from the environment", nil, "eu-west-1", "eu-west-1", false},
		{"flag beats env", []string{"--region", "ap-south"}, "eu-west-1", "ap-south", false},
		{"not a label value", []string{"--region", "eu west"}, "", "", true},
		{"bad in the environment", nil, "-eu", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == EnvRegion {
					return tc.env
				}
				return ""
			}
			var out strings.Builder
			f, err := ParseFlags("medops-api", tc.args, getenv, &out)
			if tc.bad {
				if err == nil || !strings.Contains(err.Error(), "--region (env MEDOPS_REGION)") || !strings.Contains(out.String(), "--region") {
					t.Fatalf("want an error naming --region, got %v (output %q)", err, out.String())
				}
				return
			}
			if err != nil || f.Region != tc.want {
				t.Fatalf("region %q, %v; want %q", f.Region, err, tc.want)
			}
		})
	}
}

func TestFlagsEnvAndFilePrecedence(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("listen: 127.0.0.1:1111\ndataDir: /from/file\nlogLevel: warn\npostgres:\n  dsnFile: /file/dsn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{EnvConfig: p, EnvListen: "127.0.0.1:2222"}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		name                 string
		args                 []string
		env                  map[string]string
		listen, dataDir, dsn string
	}{
		{"env beats file", nil, nil, "127.0.0.1:2222", "/from/file", "/file/dsn"},
		{"dsn file from env", nil, map[string]string{EnvPostgresDSNFile: "/env/dsn"}, "127.0.0.1:2222", "/from/file", "/env/dsn"},
		{"flag beats env", []string{"--listen", "127.0.0.1:3333", "--data-dir", "d", "--postgres-dsn-file", "/flag/dsn"},
			map[string]string{EnvPostgresDSNFile: "/env/dsn"}, "127.0.0.1:3333", "d", "/flag/dsn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string {
				if v, ok := tc.env[k]; ok {
					return v
				}
				return getenv(k)
			}
			f, err := ParseFlags("medops-api", tc.args, getenv, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			c, err := FromFlags(f)
			if err != nil {
				t.Fatal(err)
			}
			if c.Listen != tc.listen || c.DataDir != tc.dataDir || c.LogLevel != "warn" || c.PostgresDSNFile() != tc.dsn {
				t.Fatalf("got listen %s dataDir %s level %s dsnFile %s", c.Listen, c.DataDir, c.LogLevel, c.PostgresDSNFile())
			}
		})
	}
	if _, err := ParseFlags("medops-api", []string{"--nope"}, getenv, io.Discard); err == nil {
		t.Fatal("unknown flag accepted")
	}
	if _, err := ParseFlags("medops-api", []string{"extra"}, getenv, io.Discard); err == nil {
		t.Fatal("stray argument accepted")
	}
}

// TestSharedCacheKeyFileFlag: the HMAC key file of the shared tier comes
// from the file, the environment or the flag, in that order of strength;
// without it a shared tier is refused with the field named.
func TestSharedCacheKeyFileFlag(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("cache:\n  shared:\n    memcached: {addresses: [\"127.0.0.1:11211\"]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // the key file, or the error
	}{
		{"none", nil, nil, "sharedCache.hmacKeyFile: Required value"},
		{"env", nil, map[string]string{EnvSharedCacheHMACKeyFile: "/env/key"}, "/env/key"},
		{"flag beats env", []string{"--shared-cache-hmac-key-file", "/flag/key"}, map[string]string{EnvSharedCacheHMACKeyFile: "/env/key"}, "/flag/key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseFlags("medops-api", append([]string{"--config", p}, tc.args...), func(k string) string { return tc.env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			c, err := FromFlags(f)
			switch {
			case err != nil:
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v; want %q", err, tc.want)
				}
			case c.SharedCache == nil || c.SharedCache.HMACKeyFile != tc.want:
				t.Fatalf("sharedCache %+v; want hmacKeyFile %s", c.SharedCache, tc.want)
			}
		})
	}
}

// FuzzLoad checks that no document makes the loader panic, and that every
// accepted document survives a marshal/parse round trip unchanged.
func FuzzLoad(f *testing.F) {
	for _, seed := range []string{
		"",
		"listen: 127.0.0.1:8080\n",
		"cache:\n  shards: 3\n",
		"cache:\n  size: 16Mi\n  shards: 4\n  maxEntrySize: 1Mi\n  rules:\n  - pathPrefix: /a\n    ttl: 1m\n",
		"modules:\n  gateway:\n    enabled: true\n    upstreams:\n    - name: e\n      url: https://example.org\n",
		"server:\n  maxBodySize: 10Ki\n  shutdownDelay: 1s\n  shutdownTimeout: 2s\n",
		"auth: {tokenFile: /t, disabled: true}\n",
		"{\"logLevel\":\"debug\"}",
		"a: [\n",
		"- 1\n",
		"cache: {size: -1}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("marshal of accepted config failed: %v", err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of marshalled config failed: %v\n%s", err, out)
		}
		out2, err := yaml.Marshal(c2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the config:\n%s\n---\n%s", out, out2)
		}
	})
}

// TestAccessAndShutdownDelayFollowListen: where medops-api listens decides
// whether it may run without a token, and its default drain delay. Flags
// are applied before the defaults, so --listen counts as the file's listen.
func TestAccessAndShutdownDelayFollowListen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("listen: 127.0.0.1:1111\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		refused bool
		delay   time.Duration
		warning string // "" for none
	}{
		{name: "defaults: loopback", delay: 0, warning: "no auth.tokenFile"},
		{name: "file's loopback", args: []string{"--config", p}, delay: 0, warning: "no auth.tokenFile"},
		{name: "ipv6 loopback", args: []string{"--listen", "[::1]:80"}, delay: 0, warning: "no auth.tokenFile"},
		{name: "localhost", args: []string{"--listen", "localhost:80"}, delay: 0, warning: "no auth.tokenFile"},
		{name: "flag beats the file's loopback", args: []string{"--config", p, "--listen", ":80"}, refused: true},
		{name: "all interfaces", args: []string{"--listen", "0.0.0.0:80"}, refused: true},
		{name: "a host name", args: []string{"--listen", "api.example:80"}, refused: true},
		{name: "image env", env: map[string]string{EnvListen: ":8080"}, refused: true},
		{name: "token file flag", args: []string{"--listen", ":80", "--token-file", "/t"}, delay: 5 * time.Second},
		{name: "token file env", args: []string{"--listen", ":80"}, env: map[string]string{EnvTokenFile: "/t"}, delay: 5 * time.Second},
		{name: "opt-in flag", args: []string{"--listen", ":80", "--auth-disabled"}, delay: 5 * time.Second, warning: "auth.disabled is set"},
		{name: "opt-in env", args: []string{"--listen", ":80"}, env: map[string]string{EnvAuthDisabled: "true"}, delay: 5 * time.Second, warning: "auth.disabled is set"},
		{name: "opt-in env false", args: []string{"--listen", ":80"}, env: map[string]string{EnvAuthDisabled: "0"}, refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseFlags("medops-api", tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			c, err := FromFlags(f)
			if tc.refused {
				if err == nil || !strings.Contains(err.Error(), "set auth.tokenFile (--token-file, env MEDOPS_TOKEN_FILE) to require a token, or auth.disabled: true (--auth-disabled, env MEDOPS_AUTH_DISABLED=true)") {
					t.Fatalf("want the access error, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Server.ShutdownDelay.Duration; got != tc.delay {
				t.Errorf("shutdownDelay %s, want %s", got, tc.delay)
			}
			if w := OpenAccess(c); (tc.warning == "") != (w == "") || !strings.Contains(w, tc.warning) {
				t.Errorf("warning %q, want one with %q", w, tc.warning)
			}
		})
	}
	if _, err := ParseFlags("medops-api", nil, func(k string) string { return map[string]string{EnvAuthDisabled: "yes please"}[k] }, io.Discard); err == nil {
		t.Error("a malformed MEDOPS_AUTH_DISABLED was accepted")
	}
	// A delay set in the file is kept on loopback.
	if err := os.WriteFile(p, []byte("listen: 127.0.0.1:1111\nserver:\n  shutdownDelay: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := FromFlags(Flags{ConfigPath: p})
	if err != nil || c.Server.ShutdownDelay.Duration != 2*time.Second {
		t.Fatalf("configured delay on loopback: %v %v", c, err)
	}
}

// TestOperatorRenderedConfigsStart: every config the operator renders (its
// golden files, one per kind of MedOpsAPI, including spec.auth.disabled)
// listens beyond loopback and passes the access check, because the operator
// always mounts a token file or sets auth.disabled: no operator-run pod is
// refused.
func TestOperatorRenderedConfigsStart(t *testing.T) {
	goldens, err := filepath.Glob(filepath.Join(repo.Root(), "operator", "resource", "testdata", "*.golden.yaml"))
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no operator golden files: %v", err)
	}
	for _, g := range goldens {
		t.Run(filepath.Base(g), func(t *testing.T) {
			b, err := os.ReadFile(g)
			if err != nil {
				t.Fatal(err)
			}
			var found int
			for _, doc := range strings.Split(string(b), "\n---\n") {
				var obj struct {
					Kind string            `json:"kind"`
					Data map[string]string `json:"data"`
				}
				if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
					t.Fatal(err)
				}
				data, ok := obj.Data["config.yaml"]
				if obj.Kind != "ConfigMap" || !ok {
					continue
				}
				found++
				c, err := Parse([]byte(data))
				if err != nil {
					t.Fatal(err)
				}
				if v1alpha1.ListensOnLoopback(c.Listen) {
					t.Fatalf("the operator's config listens on loopback (%s): the check would not apply", c.Listen)
				}
				if err := CheckAccess(c); err != nil {
					t.Fatalf("an operator-run pod would be refused: %v", err)
				}
			}
			if found != 1 {
				t.Fatalf("%d rendered configs, want 1", found)
			}
		})
	}
}
