package backup

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/medops/medops/server/httpx"
	"github.com/medops/medops/server/tasks"
)

// Client talks to a running medops-api: its export and import routes.
type Client struct {
	// BaseURL is where the API answers, with its server.basePath if it has
	// one: http://127.0.0.1:8080, http://medops.team.svc:8080/base.
	BaseURL string
	// Token is the bearer token.
	Token string
	HTTP  *http.Client
}

// NewClient checks the URL and reads the token file (as the API does: the
// file's content, trimmed).
func NewClient(rawURL, tokenFile string) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url must be an http:// or https:// URL of the API, not %q", rawURL)
	}
	if tokenFile == "" {
		return nil, fmt.Errorf("--token-file is required: the export and import routes need the API's bearer token")
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("--token-file: %s is empty", tokenFile)
	}
	// No overall timeout: an export takes as long as the store is large;
	// the caller's context bounds it.
	return &Client{BaseURL: strings.TrimSuffix(rawURL, "/"), Token: tok, HTTP: &http.Client{}}, nil
}

// Export starts an export and returns its body, which the caller reads to
// the end and closes. Verify it with tasks.NewImportReader: a body that
// ends without its trailer is an export cut short.
func (c *Client) Export(ctx context.Context) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/api/v1/tasks"+tasks.ExportSuffix, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	res, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		defer res.Body.Close()
		return nil, fmt.Errorf("export: %s", apiError(res))
	}
	return res.Body, nil
}

// Import posts an export (gzipped when gzipped says so) with mode and
// returns what the API counted.
func (c *Client) Import(ctx context.Context, mode tasks.ImportMode, body io.Reader, gzipped bool) (tasks.ImportResult, error) {
	u := c.BaseURL + "/api/v1/tasks" + tasks.ImportSuffix
	if mode != tasks.ImportIntoEmpty {
		u += "?mode=" + url.QueryEscape(string(mode))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return tasks.ImportResult{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", tasks.ExchangeMediaType)
	if gzipped {
		req.Header.Set("Content-Encoding", "gzip")
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return tasks.ImportResult{}, fmt.Errorf("import: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return tasks.ImportResult{}, fmt.Errorf("import: %s", apiError(res))
	}
	var out tasks.ImportResult
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return tasks.ImportResult{}, fmt.Errorf("import: reading the answer: %w", err)
	}
	return out, nil
}

// apiError says what an error answer of the API says.
func apiError(res *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var e httpx.ErrorBody
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return fmt.Sprintf("the API answered %d %s: %s", res.StatusCode, e.Error.Code, e.Error.Message)
	}
	return fmt.Sprintf("the API answered %s: %.200s", res.Status, b)
}
