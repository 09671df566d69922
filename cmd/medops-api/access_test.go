package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loopbackBase turns the base URL of a server listening on all interfaces
// into one that reaches it over 127.0.0.1.
func loopbackBase(t *testing.T, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + net.JoinHostPort("127.0.0.1", u.Port())
}

func postTask(t *testing.T, base, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/api/v1/tasks", strings.NewReader(`{"title":"access"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestRefusesOpenAPIBeyondLoopback: without a token file, medops-api
// refuses to listen on an address other machines can reach (as the image
// does, on :8080), and the error names both ways out: the token file and
// the explicit opt-in to anonymous access, as settings and as flags.
func TestRefusesOpenAPIBeyondLoopback(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("listen: \":0\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
	}{
		{"flag", []string{"--listen", "0.0.0.0:0"}, nil},
		{"image env", nil, []string{"MEDOPS_LISTEN=:0"}},
		{"config file", []string{"--config", cfg}, nil},
		{"opt-in turned off", []string{"--listen", "[::]:0"}, []string{"MEDOPS_AUTH_DISABLED=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A medops-api that starts instead of refusing is killed at the
			// deadline, and the test fails on its exit.
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"--data-dir", t.TempDir()}, tc.args...)...)
			cmd.Env = append(append(os.Environ(), runMainEnv+"=1"), tc.env...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit %v, want 1; stderr:\n%s", err, stderr.String())
			}
			if stdout.Len() != 0 {
				t.Fatalf("listened although it refused: %q", stdout.String())
			}
			for _, want := range []string{"is not a loopback address and no bearer token is configured",
				"auth.tokenFile", "--token-file", "MEDOPS_TOKEN_FILE", "auth.disabled: true", "--auth-disabled", "MEDOPS_AUTH_DISABLED=true"} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("the error does not say %q:\n%s", want, stderr.String())
				}
			}
		})
	}
}

// TestAccessSettings: each way to start without refusal, and what a
// client then gets.
func TestAccessSettings(t *testing.T) {
	const token = "s3cret-token"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("listen: \":0\"\nauth:\n  disabled: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		args       []string
		env        []string
		anonymous  int    // status of a create without the token
		withToken  int    // status of a create with it
		warning    string // in the start-up log; "" for none
		noWarnings bool
	}{
		{name: "loopback without a token (make run-api)", anonymous: 201, withToken: 201,
			warning: `"level":"WARN","msg":"the API needs no token","reason":"no auth.tokenFile (--token-file)`},
		{name: "all interfaces with a token file flag", args: []string{"--listen", "0.0.0.0:0", "--token-file", tokenFile},
			anonymous: 401, withToken: 201, noWarnings: true},
		{name: "all interfaces with the token file env", args: []string{"--listen", ":0"}, env: []string{"MEDOPS_TOKEN_FILE=" + tokenFile},
			anonymous: 401, withToken: 201, noWarnings: true},
		{name: "all interfaces, anonymous on purpose (flag)", args: []string{"--listen", "0.0.0.0:0", "--auth-disabled"},
			anonymous: 201, withToken: 201, warning: `"reason":"auth.disabled is set`},
		{name: "all interfaces, anonymous on purpose (env)", args: []string{"--listen", "0.0.0.0:0"}, env: []string{"MEDOPS_AUTH_DISABLED=true"},
			anonymous: 201, withToken: 201, warning: `"reason":"auth.disabled is set`},
		{name: "all interfaces, anonymous on purpose (file)", args: []string{"--config", cfg},
			anonymous: 201, withToken: 201, warning: `"reason":"auth.disabled is set`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startEnv(t, tc.env, append([]string{"--data-dir", t.TempDir()}, tc.args...)...)
			base := loopbackBase(t, p.base)
			if got := postTask(t, base, ""); got != tc.anonymous {
				t.Errorf("create without a token: %d, want %d", got, tc.anonymous)
			}
			if got := postTask(t, base, token); got != tc.withToken {
				t.Errorf("create with the token: %d, want %d", got, tc.withToken)
			}
			log := p.stderr.String()
			if tc.warning != "" && !strings.Contains(log, tc.warning) {
				t.Errorf("no start-up warning %q:\n%s", tc.warning, log)
			}
			if tc.noWarnings && strings.Contains(log, `"level":"WARN"`) {
				t.Errorf("warned although a token is required:\n%s", log)
			}
		})
	}
}
