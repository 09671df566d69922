//go:build e2e

package journey

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// reply is one HTTP answer.
type reply struct {
	code int
	hdr  http.Header
	body []byte
}

func (r reply) String() string {
	b := r.body
	if len(b) > 300 {
		b = b[:300]
	}
	return fmt.Sprintf("%d %s", r.code, b)
}

// field is a top-level JSON field of the body as a string ("" if absent).
func (r reply) field(name string) string {
	var m map[string]any
	if json.Unmarshal(r.body, &m) != nil {
		return ""
	}
	v, ok := m[name]
	if !ok {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// isErrorEnvelope says whether the body is the API's JSON error shape.
func (r reply) isErrorEnvelope() bool {
	var e struct {
		Error *struct{ Code, Message string } `json:"error"`
	}
	return strings.HasPrefix(r.hdr.Get("Content-Type"), "application/json") &&
		json.Unmarshal(r.body, &e) == nil && e.Error != nil && e.Error.Code != "" && e.Error.Message != ""
}

// client sends requests for host:80 to addr, as curl --connect-to does: the
// URL stays the one in status.url, the connection goes to the ingress
// controller's loopback port.
func client(host, addr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			if a == host+":80" {
				a = addr
			}
			return d.DialContext(ctx, network, a)
		}},
	}
}

// do sends one request; token "" sends none.
func (s *suite) do(t *testing.T, c *http.Client, method, url, token string, body []byte) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(s.ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, hdr: resp.Header, body: b}
}

func httpGetOK(url string) error {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// bigTask is a task JSON body of about n bytes.
func bigTask(n int) []byte {
	return []byte(`{"title":"` + strings.Repeat("a", n) + `"}`)
}
