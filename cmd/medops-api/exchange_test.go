package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medops/medops/server/store/boltstore"
	"github.com/medops/medops/server/tasks"
)

const exchangeToken = "backup-token-123"

// tokenArgs writes a token file and a config that requires it, and
// returns them with the server arguments for dataDir.
func tokenArgs(t *testing.T, dataDir string) (cfgFile, tokenFile string, args []string) {
	t.Helper()
	dir := t.TempDir()
	tokenFile = filepath.Join(dir, "token")
	cfgFile = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(tokenFile, []byte(exchangeToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgFile, []byte("dataDir: "+dataDir+"\nauth:\n  tokenFile: "+tokenFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgFile, tokenFile, []string{"--config", cfgFile}
}

// authed sends a request with the token.
func authed(t *testing.T, method, url, ctype string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+exchangeToken)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, b
}

// taskLines is an export without its header: what must be equal between
// two stores that hold the same tasks.
func taskLines(t *testing.T, base string) string {
	t.Helper()
	status, b := authed(t, http.MethodGet, base+"/api/v1/tasks:export", "", nil)
	if status != http.StatusOK {
		t.Fatalf("export: %d %s", status, b)
	}
	_, rest, _ := strings.Cut(string(b), "\n")
	return rest
}

// cli runs a sub-command in this process, as main would.
func cli(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = dispatch(nil, args, func(k string) string {
		switch k {
		case "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY":
			return os.Getenv(k)
		}
		return ""
	}, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func seed(t *testing.T, base string, n int) {
	t.Helper()
	for i := range n {
		status, b := authed(t, http.MethodPost, base+"/api/v1/tasks", "application/json",
			strings.NewReader(fmt.Sprintf(`{"title":"seed %d","labels":["l%d"],"assignee":"ann"}`, i, i%3)))
		if status != http.StatusCreated {
			t.Fatalf("create: %d %s", status, b)
		}
		if i%5 == 0 {
			var tk tasks.Task
			_ = json.Unmarshal(b, &tk)
			if status, b := authed(t, http.MethodPatch, base+"/api/v1/tasks/"+tk.ID, "application/json", strings.NewReader(`{"status":"done"}`)); status != http.StatusOK {
				t.Fatalf("patch: %d %s", status, b)
			}
		}
	}
}

// TestExportImportSubcommands: medops-api export writes a file that
// medops-api import loads into another server, with the same tasks; a
// second import is refused, a merge mode is not.
func TestExportImportSubcommands(t *testing.T) {
	_, tokA, argsA := tokenArgs(t, t.TempDir())
	a := start(t, argsA...)
	seed(t, a.base, 25)
	out := filepath.Join(t.TempDir(), "tasks.ndjson.gz")

	if code, _, stderr := cli("export", "--url", a.base, "--token-file", filepath.Join(t.TempDir(), "none"), "-o", out); code != 1 || !strings.Contains(stderr, "--token-file") {
		t.Fatalf("export without a token file: %d %s", code, stderr)
	}
	if code, _, stderr := cli("export", "--url", a.base, "--token-file", tokA, "-o", out); code != 0 || !strings.Contains(stderr, "25 tasks written") {
		t.Fatalf("export: %d %s", code, stderr)
	}
	zr, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if _, err := gzip.NewReader(zr); err != nil {
		t.Fatalf("-o x.gz did not write gzip: %v", err)
	}

	_, tokB, argsB := tokenArgs(t, t.TempDir())
	b := start(t, argsB...)
	code, stdout, stderr := cli("import", "--url", b.base+"/", "--token-file", tokB, out)
	if code != 0 || strings.TrimSpace(stdout) != `{"imported":25}` {
		t.Fatalf("import: %d %s %s", code, stdout, stderr)
	}
	if taskLines(t, b.base) != taskLines(t, a.base) {
		t.Fatal("the imported server holds other tasks than the exported one")
	}
	code, _, stderr = cli("import", "--url", b.base, "--token-file", tokB, out)
	if code != 1 || !strings.Contains(stderr, "409 not_empty") {
		t.Fatalf("second import: %d %s", code, stderr)
	}
	code, stdout, _ = cli("import", "--url", b.base, "--token-file", tokB, "--mode", "skip-existing", out)
	if code != 0 || strings.TrimSpace(stdout) != `{"imported":0,"skipped":25}` {
		t.Fatalf("skip-existing: %d %s", code, stdout)
	}
	if code, _, stderr := cli("import", "--url", b.base, "--token-file", tokB, "--mode", "merge", out); code != 2 || !strings.Contains(stderr, "mode must be one of") {
		t.Fatalf("bad mode: %d %s", code, stderr)
	}
}

// TestBackupAndRestoreSubcommands is the drill on one machine: back up a
// server to a folder, restore into an empty data directory before a new
// server starts, and find every task there; a second restore does nothing
// and a store with tasks of its own is refused.
func TestBackupAndRestoreSubcommands(t *testing.T) {
	_, tok, args := tokenArgs(t, t.TempDir())
	a := start(t, args...)
	seed(t, a.base, 30)
	dir := t.TempDir()
	termLog := filepath.Join(t.TempDir(), "termination-log")

	code, stdout, stderr := cli("backup", "--url", a.base, "--token-file", tok, "--name", "team-a", "--retention", "3",
		"--dir", dir, "--termination-log", termLog)
	if code != 0 {
		t.Fatalf("backup: %d %s", code, stderr)
	}
	var res struct {
		File   string    `json:"file"`
		Tasks  int64     `json:"tasks"`
		SHA256 string    `json:"sha256"`
		Bytes  int64     `json:"bytes"`
		Time   time.Time `json:"time"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Tasks != 30 || res.Time.IsZero() ||
		res.File != "team-a-"+res.Time.UTC().Format("20060102T150405Z")+".ndjson.gz" {
		t.Fatalf("backup result %s (%v)", stdout, err)
	}
	if logged, _ := os.ReadFile(termLog); string(logged) != stdout {
		t.Fatalf("termination log %q, stdout %q", logged, stdout)
	}
	file, err := os.ReadFile(filepath.Join(dir, res.File))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(file)
	sumFile, _ := os.ReadFile(filepath.Join(dir, res.File+".sha256"))
	if hex.EncodeToString(sum[:]) != res.SHA256 || int64(len(file)) != res.Bytes ||
		string(sumFile) != res.SHA256+"  "+res.File+"\n" {
		t.Fatalf("the file does not match the result: sha256 %x, %d bytes, .sha256 %q", sum, len(file), sumFile)
	}

	// A wrong token fails the run and leaves no file.
	bad := filepath.Join(t.TempDir(), "bad-token")
	_ = os.WriteFile(bad, []byte("nope"), 0o600)
	empty := t.TempDir()
	code, _, stderr = cli("backup", "--url", a.base, "--token-file", bad, "--name", "team-a", "--retention", "3", "--dir", empty)
	if entries, _ := os.ReadDir(empty); code != 1 || !strings.Contains(stderr, "401") || len(entries) != 0 {
		t.Fatalf("backup with a wrong token: %d %s, %d files left", code, stderr, len(entries))
	}

	// Restore into a new data directory, before its server starts.
	newData := t.TempDir()
	cfg, _, newArgs := tokenArgs(t, newData)
	code, stdout, stderr = cli("restore", "--config", cfg, "--from", "latest", "--name", "team-a", "--dir", dir, "--termination-log", termLog)
	if code != 0 || strings.TrimSpace(stdout) != fmt.Sprintf(`{"restored":%q,"tasks":30}`, res.File) {
		t.Fatalf("restore: %d %s %s", code, stdout, stderr)
	}
	code, stdout, _ = cli("restore", "--config", cfg, "--from", "latest", "--name", "team-a", "--dir", dir)
	if code != 0 || strings.TrimSpace(stdout) != fmt.Sprintf(`{"skipped":"already restored","file":%q}`, res.File) {
		t.Fatalf("second restore: %d %s", code, stdout)
	}
	c := start(t, newArgs...)
	if taskLines(t, c.base) != taskLines(t, a.base) {
		t.Fatal("the restored server holds other tasks than the backed-up one")
	}

	// A store with tasks of its own, never restored, is refused.
	own := t.TempDir()
	st, err := boltstore.Open(own, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(t.Context(), tasks.Task{Title: "mine", Priority: "normal", Status: "open", Labels: []string{}}); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	cfgOwn, _, _ := tokenArgs(t, own)
	code, _, stderr = cli("restore", "--config", cfgOwn, "--from", res.File, "--dir", dir, "--termination-log", termLog)
	if logged, _ := os.ReadFile(termLog); code != 1 || !strings.Contains(stderr, "task store is not empty; refusing to restore") ||
		!strings.Contains(string(logged), "refusing to restore") {
		t.Fatalf("restore into a store with tasks: %d %s (termination log %q)", code, stderr, logged)
	}
	if code, _, stderr := cli("restore", "--config", cfgOwn, "--from", "latest", "--name", "team-b", "--dir", dir); code != 1 ||
		!strings.Contains(stderr, "no complete backup of team-b") {
		t.Fatalf("restore of a name without backups: %d %s", code, stderr)
	}
	if code, _, stderr := cli("backup", "--url", a.base, "--token-file", tok, "--name", "team-a", "--retention", "0", "--dir", dir); code != 1 ||
		!strings.Contains(stderr, "--retention must be at least 1") {
		t.Fatalf("retention 0: %d %s", code, stderr)
	}
	if code, _, stderr := cli("backup", "--url", a.base, "--token-file", tok, "--name", "team-a", "--retention", "2"); code != 2 ||
		!strings.Contains(stderr, "name a destination") {
		t.Fatalf("no destination: %d %s", code, stderr)
	}
}

// exportStream is an export of n generated tasks (about 300 bytes each).
func exportStream(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tasks.NewExportWriter(&buf)
	if err := w.Header(tasks.ExchangeHeader{Store: "test", Time: time.Now(), Count: int64(n)}); err != nil {
		t.Fatal(err)
	}
	ids := tasks.NewIDGen(time.Now)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range n {
		tk := tasks.Task{Title: fmt.Sprintf("generated task %d", i), Details: strings.Repeat("detail ", 20),
			Priority: "normal", Status: "open", Assignee: "ann", Labels: []string{"gen"}}
		if err := ids.Stamp(t.Context(), &tk, at); err != nil {
			t.Fatal(err)
		}
		tk.Version = int64(1 + i%4)
		js, err := json.Marshal(&tk)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Task(js); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Trailer(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestImportIsAtomicUnderKillNine: medops-api killed with SIGKILL in the
// middle of an import (well past the socket buffers: the server has
// written tens of thousands of tasks into its transaction) comes back with
// none of them, and the same import then succeeds whole.
func TestImportIsAtomicUnderKillNine(t *testing.T) {
	killNineMidImport(t, "--data-dir", t.TempDir())
}

func killNineMidImport(t *testing.T, args ...string) {
	const n = 100_000
	stream := exportStream(t, n)
	p := start(t, args...)
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, p.base+"/api/v1/tasks:import", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", tasks.ExchangeMediaType)
	answered := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			err = fmt.Errorf("the import was answered %d %s before the kill", res.StatusCode, b)
		}
		answered <- err
	}()
	// Four fifths of the stream: the write returns once the server has
	// read all but what the sockets buffer (a few MiB of 30).
	if _, err := pw.Write(stream[:len(stream)*4/5]); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	_ = pw.CloseWithError(io.ErrUnexpectedEOF)
	if err := <-answered; err != nil && strings.Contains(err.Error(), "answered") {
		t.Fatal(err)
	}

	q := start(t, args...)
	res, err := http.Get(q.base + "/api/v1/tasks?limit=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), `"items":[]`) {
		t.Fatalf("after a SIGKILL mid-import the store holds tasks: %.300s", b)
	}
	res, err = http.Post(q.base+"/api/v1/tasks:import", tasks.ExchangeMediaType, bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != fmt.Sprintf(`{"imported":%d}`, n) {
		t.Fatalf("import after the restart: %d %s", res.StatusCode, b)
	}
}
