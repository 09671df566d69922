package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/medops/medops/internal/s3test"
	"github.com/medops/medops/server/store/boltstore"
	"github.com/medops/medops/server/tasks"
)

const token = "tok-3"

// api is a real task API on loopback over a real bbolt store, with the
// token required; broken, when set, makes its export stop half-way.
type api struct {
	srv    *httptest.Server
	store  *boltstore.Store
	client *Client
	broken bool
}

func newAPI(t *testing.T, n int) *api {
	t.Helper()
	st, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	for i := range n {
		tk := tasks.Task{Title: fmt.Sprintf("backed up %d", i), Details: strings.Repeat("x", i%50)}
		tk.Normalize()
		if _, err := st.Create(t.Context(), tk); err != nil {
			t.Fatal(err)
		}
	}
	a := &api{store: st}
	r := chi.NewRouter()
	if err := tasks.MountExchange(r, "/api/v1/tasks", tasks.Options{Store: st}); err != nil {
		t.Fatal(err)
	}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":{"code":"unauthorized","message":"the bearer token is not valid"}}`)
			return
		}
		if a.broken {
			// Half an export, then the connection is cut.
			var buf bytes.Buffer
			if _, err := tasks.Export(req.Context(), st, &buf, time.Now()); err != nil {
				t.Error(err)
			}
			w.Header().Set("Content-Type", tasks.ExchangeMediaType)
			_, _ = w.Write(buf.Bytes()[:buf.Len()/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		r.ServeHTTP(w, req)
	}))
	t.Cleanup(a.srv.Close)
	a.client = &Client{BaseURL: a.srv.URL, Token: token, HTTP: a.srv.Client()}
	return a
}

// destinations runs test against a folder and against a real S3 server
// (internal/s3test: weed or gofakes3; skipped without either unless
// MEDOPS_REQUIRE_S3=1).
func destinations(t *testing.T, test func(t *testing.T, newDest func(t *testing.T) Destination)) {
	t.Run("dir", func(t *testing.T) {
		test(t, func(t *testing.T) Destination { return Dir{Path: t.TempDir()} })
	})
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Start(t)
		n := 0
		test(t, func(t *testing.T) Destination {
			n++
			bucket := fmt.Sprintf("backups-%d", n)
			srv.MakeBucket(t, bucket)
			d, err := NewS3(t.Context(), S3Options{Endpoint: srv.Endpoint, Bucket: bucket, Prefix: "team", Insecure: true,
				AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
			if err != nil {
				t.Fatalf("%v\n%s", err, srv.Log())
			}
			return d
		})
	})
}

func listed(t *testing.T, d Destination) []string {
	t.Helper()
	names, err := d.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

func TestDestinationContract(t *testing.T) {
	destinations(t, func(t *testing.T, newDest func(t *testing.T) Destination) {
		ctx := t.Context()
		d := newDest(t)
		if got := listed(t, d); len(got) != 0 {
			t.Fatalf("a new destination lists %v", got)
		}
		big := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB: two multipart parts on S3
		if err := d.Put(ctx, "a.ndjson.gz", bytes.NewReader(big)); err != nil {
			t.Fatal(err)
		}
		if err := d.Put(ctx, "b", strings.NewReader("small")); err != nil {
			t.Fatal(err)
		}
		// A reader that fails leaves nothing, however much it gave first.
		failing := io.MultiReader(bytes.NewReader(big[:20<<20]), iotestErr{})
		if err := d.Put(ctx, "c.ndjson.gz", failing); err == nil {
			t.Fatal("Put of a failing reader succeeded")
		}
		if got := listed(t, d); !slices.Equal(got, []string{"a.ndjson.gz", "b"}) {
			t.Fatalf("listed %v, want a.ndjson.gz and b", got)
		}
		rc, err := d.Open(ctx, "a.ndjson.gz")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("read back %d bytes (%v), wrote %d", len(got), err, len(big))
		}
		if _, err := d.Open(ctx, "missing"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Open of a missing object: %v", err)
		}
		if err := d.Delete(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		if err := d.Delete(ctx, "b"); err != nil {
			t.Fatalf("deleting a missing object: %v", err)
		}
		if got := listed(t, d); !slices.Equal(got, []string{"a.ndjson.gz"}) {
			t.Fatalf("after delete: %v", got)
		}
		if err := d.Put(ctx, "../escape", strings.NewReader("x")); err == nil {
			t.Fatal("a name with a slash was accepted")
		}
	})
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("the source failed") }

// TestBackupRetentionAndRestore: runs at three times keep the newest two,
// each complete with its checksum; restore of latest brings every task
// back with ids, versions and timestamps, once.
func TestBackupRetentionAndRestore(t *testing.T) {
	destinations(t, func(t *testing.T, newDest func(t *testing.T) Destination) {
		ctx := t.Context()
		a := newAPI(t, 120)
		d := newDest(t)
		at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
		var results []Result
		for i := range 3 {
			now := at.Add(time.Duration(i) * time.Hour)
			res, err := Run(ctx, Options{Client: a.client, Dest: d, Name: "team", Retention: 2, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			if res.Tasks != 120 || res.File != FileName("team", now) || len(res.SHA256) != 64 || res.Bytes == 0 {
				t.Fatalf("run %d: %+v", i, res)
			}
			results = append(results, res)
		}
		want := []string{results[1].File, results[1].File + ".sha256", results[2].File, results[2].File + ".sha256"}
		if got := listed(t, d); !slices.Equal(got, want) {
			t.Fatalf("after three runs with retention 2: %v, want %v", got, want)
		}
		if !slices.Equal(results[2].Pruned, []string{results[0].File}) {
			t.Fatalf("pruned %v", results[2].Pruned)
		}

		st, err := boltstore.Open(t.TempDir(), boltstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		res, err := Restore(ctx, st, d, "team", "latest")
		if err != nil || res.File != results[2].File || res.Tasks != 120 || res.Skipped {
			t.Fatalf("restore: %+v %v", res, err)
		}
		var src, dst bytes.Buffer
		if _, err := tasks.Export(ctx, a.store, &src, at); err != nil {
			t.Fatal(err)
		}
		if _, err := tasks.Export(ctx, st, &dst, at); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(src.Bytes()[bytes.IndexByte(src.Bytes(), '\n'):], dst.Bytes()[bytes.IndexByte(dst.Bytes(), '\n'):]) {
			t.Fatal("the restored store differs from the backed-up one")
		}
		// Once restored, never again: not even from a newer backup.
		if _, err := Run(ctx, Options{Client: a.client, Dest: d, Name: "team", Retention: 2, Now: func() time.Time { return at.Add(5 * time.Hour) }}); err != nil {
			t.Fatal(err)
		}
		if res, err := Restore(ctx, st, d, "team", "latest"); err != nil || !res.Skipped || res.File != results[2].File {
			t.Fatalf("second restore: %+v %v", res, err)
		}
	})
}

// TestFailedBackupLeavesNothingThatLooksComplete: an export cut off
// half-way fails the run with no file left at the destination, and a
// backup whose content no longer matches its checksum is refused by
// restore, which then writes nothing.
func TestFailedBackupLeavesNothingThatLooksComplete(t *testing.T) {
	destinations(t, func(t *testing.T, newDest func(t *testing.T) Destination) {
		ctx := t.Context()
		a := newAPI(t, 400)
		d := newDest(t)
		a.broken = true
		if _, err := Run(ctx, Options{Client: a.client, Dest: d, Name: "team", Retention: 2}); err == nil ||
			!strings.Contains(err.Error(), "the export is not whole") {
			t.Fatalf("a backup of a cut-off export: %v", err)
		}
		if got := listed(t, d); len(got) != 0 {
			t.Fatalf("a failed backup left %v", got)
		}
		a.broken = false
		if _, err := Run(ctx, Options{Client: &Client{BaseURL: a.srv.URL, Token: "wrong", HTTP: a.srv.Client()}, Dest: d, Name: "team", Retention: 2}); err == nil ||
			!strings.Contains(err.Error(), "401 unauthorized") {
			t.Fatalf("a backup with a wrong token: %v", err)
		}
		res, err := Run(ctx, Options{Client: a.client, Dest: d, Name: "team", Retention: 2})
		if err != nil {
			t.Fatal(err)
		}
		// Another file under the same name: its .sha256 no longer matches.
		other := newAPI(t, 3)
		od := Dir{Path: t.TempDir()}
		ores, err := Run(ctx, Options{Client: other.client, Dest: od, Name: "team", Retention: 2, Now: func() time.Time { return time.Now().Add(time.Hour) }})
		if err != nil {
			t.Fatal(err)
		}
		swapped, err := os.ReadFile(filepath.Join(od.Path, ores.File))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Put(ctx, res.File, bytes.NewReader(swapped)); err != nil {
			t.Fatal(err)
		}
		st, err := boltstore.Open(t.TempDir(), boltstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := Restore(ctx, st, d, "team", res.File); err == nil || !strings.Contains(err.Error(), "but its .sha256 says") {
			t.Fatalf("restore of a file that does not match its checksum: %v", err)
		}
		if p, _ := st.List(ctx, tasks.ListOptions{}); len(p.Items) != 0 {
			t.Fatalf("a refused restore wrote %d tasks", len(p.Items))
		}
		if m, _ := st.RestoreMarker(ctx); m != "" {
			t.Fatalf("a refused restore left the marker %q", m)
		}
		if _, err := Restore(ctx, st, d, "team", "team-20990101T000000Z.ndjson.gz"); err == nil || !strings.Contains(err.Error(), "not a complete backup") {
			t.Fatalf("restore of a missing file: %v", err)
		}
	})
}

func TestRestoreRefusesAStoreWithTasks(t *testing.T) {
	ctx := t.Context()
	a := newAPI(t, 5)
	d := Dir{Path: t.TempDir()}
	if _, err := Run(ctx, Options{Client: a.client, Dest: d, Name: "team", Retention: 1}); err != nil {
		t.Fatal(err)
	}
	// The API's own store holds tasks and was never restored.
	if _, err := Restore(ctx, a.store, d, "team", "latest"); !errors.Is(err, ErrStoreNotEmpty) ||
		err.Error() != "task store is not empty; refusing to restore" {
		t.Fatalf("restore into a store with tasks: %v", err)
	}
}

func TestNames(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	if got := FileName("team-a", at); got != "team-a-20260102T020405Z.ndjson.gz" {
		t.Fatalf("FileName: %s", got)
	}
	for name, ok := range map[string]bool{"team-a": true, "a.b": true, "": false, "Team": false, "-a": false, "a/b": false} {
		if ValidName(name) != ok {
			t.Errorf("ValidName(%q) = %v", name, !ok)
		}
	}
	// Backups of team-b are not team's, and files that only look alike
	// are ignored.
	d := Dir{Path: t.TempDir()}
	for _, n := range []string{"team-20260101T000000Z.ndjson.gz", "team-20260101T000000Z.ndjson.gz.sha256",
		"team-b-20260102T000000Z.ndjson.gz", "team-b-20260102T000000Z.ndjson.gz.sha256",
		"team-20260103T000000Z.ndjson.gz", "team-notatime.ndjson.gz", "other.txt"} {
		if err := d.Put(context.Background(), n, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
	}
	complete, incomplete, err := Complete(context.Background(), d, "team")
	if err != nil || len(complete) != 1 || complete[0].File != "team-20260101T000000Z.ndjson.gz" ||
		!slices.Equal(incomplete, []string{"team-20260103T000000Z.ndjson.gz"}) {
		t.Fatalf("Complete: %+v %v %v", complete, incomplete, err)
	}
}
