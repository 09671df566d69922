package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medops/medops/internal/pgtest"
)

// These tests run real medops-api processes on one real PostgreSQL
// (internal/pgtest). Without PostgreSQL they skip, unless
// MEDOPS_REQUIRE_POSTGRES=1.

// startPostgres starts a database server and writes the DSN file every
// medops-api of the test uses.
func startPostgres(t *testing.T) (*pgtest.Server, []string) {
	t.Helper()
	srv := pgtest.Start(t)
	f := pgtest.WriteDSNFile(t, srv.DSN(pgtest.Database))
	return srv, []string{"--postgres-dsn-file", f, "--data-dir", t.TempDir()}
}

// TestPostgresKillNineKeepsAcknowledgedTasks: as for bbolt, every create
// answered 201 before a SIGKILL of medops-api is there after a restart.
func TestPostgresKillNineKeepsAcknowledgedTasks(t *testing.T) {
	_, args := startPostgres(t)
	killNineKeepsAcknowledgedTasks(t, args...)
}

type reply struct {
	status  int
	etag    string
	ctype   string
	body    []byte
	version int64
}

// send sends one request; body is JSON, header pairs follow.
func send(c *http.Client, method, url, body string, header ...string) (reply, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return reply{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer res.Body.Close()
	r := reply{status: res.StatusCode, etag: res.Header.Get("ETag"), ctype: res.Header.Get("Content-Type")}
	if r.body, err = io.ReadAll(res.Body); err != nil {
		return r, err
	}
	var v struct {
		Version int64 `json:"version"`
	}
	_ = json.Unmarshal(r.body, &v)
	r.version = v.Version
	return r, nil
}

func mustCreate(t *testing.T, c *http.Client, base, body string) reply {
	t.Helper()
	r, err := send(c, http.MethodPost, base+"/api/v1/tasks", body)
	if err != nil || r.status != http.StatusCreated {
		t.Fatalf("create: %d %s %v", r.status, r.body, err)
	}
	return r
}

func taskID(t *testing.T, r reply) string {
	t.Helper()
	var v struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(r.body, &v); err != nil || v.ID == "" {
		t.Fatalf("no id in %s: %v", r.body, err)
	}
	return v.ID
}

// TestPostgresThreeReplicasNoStaleReads: three medops-api processes share
// one database, each with its response cache on (the default). Clients
// write on one replica and at once read on another, 10,000 times in all:
// every read, of the task and of a filtered list, shows the version the
// write acknowledged.
func TestPostgresThreeReplicasNoStaleReads(t *testing.T) {
	_, args := startPostgres(t)
	var reps [3]*proc
	for i := range reps {
		reps[i] = start(t, args...)
	}
	const clients, rounds = 4, 2500 // 10,000 write-then-read pairs
	pairs := [][2]int{{0, 1}, {0, 2}, {1, 0}, {1, 2}, {2, 0}, {2, 1}}
	var stale, checked atomic.Int64
	var wg sync.WaitGroup
	for cl := range clients {
		wg.Go(func() {
			c := &http.Client{Timeout: 10 * time.Second}
			// Each client owns one task and one assignee, so its list
			// filter finds exactly its task.
			who := fmt.Sprintf("client-%d", cl)
			created, err := send(c, http.MethodPost, reps[cl%3].base+"/api/v1/tasks", `{"title":"probe","assignee":"`+who+`"}`)
			if err != nil || created.status != http.StatusCreated {
				t.Errorf("create: %d %v", created.status, err)
				return
			}
			var tk struct{ ID string }
			_ = json.Unmarshal(created.body, &tk)
			for i := range rounds {
				// Stay on one (writer, reader) pair for 50 rounds: a reader
				// that takes no writes itself is where a per-replica cache
				// would answer with an old version.
				pair := pairs[(cl+i/50)%len(pairs)]
				w, r := reps[pair[0]], reps[pair[1]]
				up, err := send(c, http.MethodPatch, w.base+"/api/v1/tasks/"+tk.ID, fmt.Sprintf(`{"details":"round %d"}`, i))
				if err != nil || up.status != http.StatusOK {
					t.Errorf("patch: %d %s %v", up.status, up.body, err)
					return
				}
				var got reply
				if i%4 == 3 {
					got, err = send(c, http.MethodGet, r.base+"/api/v1/tasks?assignee="+who, "")
					var page struct {
						Items []struct{ Version int64 }
					}
					_ = json.Unmarshal(got.body, &page)
					if len(page.Items) == 1 {
						got.version = page.Items[0].Version
					}
				} else {
					got, err = send(c, http.MethodGet, r.base+"/api/v1/tasks/"+tk.ID, "")
				}
				if err != nil || got.status != http.StatusOK {
					t.Errorf("read: %d %s %v", got.status, got.body, err)
					return
				}
				checked.Add(1)
				if got.version != up.version {
					stale.Add(1)
					t.Errorf("stale read on %s after a write on %s: version %d, acknowledged %d", r.base, w.base, got.version, up.version)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d reads on another replica right after a write, %d stale", checked.Load(), stale.Load())
	if checked.Load() != clients*rounds || stale.Load() != 0 {
		t.Fatalf("checked %d of %d reads, %d stale", checked.Load(), clients*rounds, stale.Load())
	}
}

// TestPostgresIfMatchRaceOneWinner: two replicas PATCH the same task with
// the same If-Match at the same moment; exactly one gets 200, the other 412
// naming the winner's version.
func TestPostgresIfMatchRaceOneWinner(t *testing.T) {
	_, args := startPostgres(t)
	a, b := start(t, args...), start(t, args...)
	c := &http.Client{Timeout: 10 * time.Second}
	for round := range 100 {
		id := taskID(t, mustCreate(t, c, a.base, `{"title":"race"}`))
		var (
			wg      sync.WaitGroup
			go_     = make(chan struct{})
			replies [2]reply
			errs    [2]error
		)
		for i, p := range []*proc{a, b} {
			wg.Go(func() {
				<-go_
				replies[i], errs[i] = send(c, http.MethodPatch, p.base+"/api/v1/tasks/"+id,
					fmt.Sprintf(`{"assignee":"replica-%d"}`, i), "If-Match", `"1"`)
			})
		}
		close(go_)
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatal(errs)
		}
		ok, lost := 0, 0
		for _, r := range replies {
			switch r.status {
			case http.StatusOK:
				ok++
			case http.StatusPreconditionFailed:
				lost++
				if r.etag != `"2"` || !strings.HasPrefix(r.ctype, "application/json") {
					t.Fatalf("round %d: 412 with ETag %s, Content-Type %s", round, r.etag, r.ctype)
				}
			}
		}
		if ok != 1 || lost != 1 {
			t.Fatalf("round %d: statuses %d and %d, want one 200 and one 412", round, replies[0].status, replies[1].status)
		}
		final, err := send(c, http.MethodGet, b.base+"/api/v1/tasks/"+id, "")
		if err != nil || final.version != 2 {
			t.Fatalf("round %d: final version %d, %v", round, final.version, err)
		}
	}
}

// TestPostgresRestartUnderLoad: writers keep creating while the database
// crashes and comes back. While it is down every answer is a JSON 503
// (never a 500, never a hang) and /readyz is 503; afterwards creates
// succeed again, every acknowledged task is there, and neither the log nor
// /metrics shows the password.
func TestPostgresRestartUnderLoad(t *testing.T) {
	srv, args := startPostgres(t)
	p := start(t, args...)
	var (
		mu       sync.Mutex
		acked    []string
		statuses = map[int]int{}
		phase    atomic.Int32 // 0 before the crash, 1 while down, 2 after the restart
		okAfter  atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			c := &http.Client{Timeout: 15 * time.Second}
			for i := 0; !stop.Load(); i++ {
				r, err := send(c, http.MethodPost, p.base+"/api/v1/tasks", fmt.Sprintf(`{"title":"w%d-%d"}`, w, i))
				if err != nil {
					t.Errorf("create failed outright (a hang or a dropped connection): %v", err)
					return
				}
				mu.Lock()
				statuses[r.status]++
				mu.Unlock()
				switch r.status {
				case http.StatusCreated:
					var tk struct{ ID string }
					_ = json.Unmarshal(r.body, &tk)
					mu.Lock()
					acked = append(acked, tk.ID)
					mu.Unlock()
					if phase.Load() == 2 {
						okAfter.Add(1)
					}
				case http.StatusServiceUnavailable:
					var e struct{ Error struct{ Code string } }
					if json.Unmarshal(r.body, &e) != nil || e.Error.Code != "unavailable" || !strings.HasPrefix(r.ctype, "application/json") {
						t.Errorf("503 is not the JSON unavailable answer: %s %s", r.ctype, r.body)
					}
					time.Sleep(5 * time.Millisecond)
				default:
					t.Errorf("create answered %d: %s", r.status, r.body)
					return
				}
			}
		})
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) || t.Failed() {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("%s: gave up\n%s", what, p.stderr)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	readyz := func() int {
		r, err := send(http.DefaultClient, http.MethodGet, p.base+"/readyz", "")
		if err != nil {
			return 0
		}
		return r.status
	}
	waitFor("creates before the crash", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 200 })
	phase.Store(1)
	srv.Crash()
	waitFor("/readyz 503 while the database is down", func() bool { return readyz() == http.StatusServiceUnavailable })
	waitFor("503s while the database is down", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return statuses[http.StatusServiceUnavailable] >= 20
	})
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	phase.Store(2)
	waitFor("/readyz 200 after the restart", func() bool { return readyz() == http.StatusOK })
	waitFor("creates after the restart", func() bool { return okAfter.Load() >= 200 })
	stop.Store(true)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("statuses %v", statuses)
	c := &http.Client{Timeout: 10 * time.Second}
	for _, id := range acked {
		r, err := send(c, http.MethodGet, p.base+"/api/v1/tasks/"+id, "")
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("acknowledged task %s lost across the database restart: %d %v", id, r.status, err)
		}
	}
	m, err := send(c, http.MethodGet, p.base+"/metrics", "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p.stderr.String()+string(m.body), srv.Password) {
		t.Fatal("the database password appears in the log or in /metrics")
	}
	if !strings.Contains(p.stderr.String(), "PostgreSQL is unreachable") {
		t.Fatalf("the outage was not logged:\n%s", p.stderr)
	}
}
