package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medops/medops/server/tasks"
)

// RunExchange runs the export and import conformance tests: every store
// must offer tasks.Exporter and tasks.Importer and behave alike, so that an
// export of one imports into any other. open is as for Run.
func RunExchange(t *testing.T, open func(t *testing.T) tasks.Store) {
	for _, tc := range []struct {
		name string
		test func(t *testing.T, open func(t *testing.T) tasks.Store)
	}{
		{"ExportIsTheStoreInIDOrder", testExportContents},
		{"ExportIsOneSnapshot", testExportSnapshot},
		{"ImportKeepsIDsVersionsAndTimes", testImportRoundTrip},
		{"ImportRefusesANonEmptyStore", testImportNotEmpty},
		{"BadStreamWritesNothing", testImportBadStream},
		{"MergeModes", testImportModes},
		{"RestoreMarker", testRestoreMarker},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, open) })
	}
}

func exchanger(t *testing.T, s tasks.Store) (tasks.Exporter, tasks.Importer) {
	t.Helper()
	ex, ok := s.(tasks.Exporter)
	if !ok {
		t.Fatalf("%T has no Export", s)
	}
	im, ok := s.(tasks.Importer)
	if !ok {
		t.Fatalf("%T has no Import", s)
	}
	return ex, im
}

// fill creates n tasks of varied shapes, changes some and deletes one, and
// returns what the store holds, in id order.
func fill(t *testing.T, s tasks.Store, n int) []tasks.Task {
	t.Helper()
	ctx := t.Context()
	due := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	var ids []string
	for i := range n {
		tk := tasks.Task{Title: fmt.Sprintf("task %d <&> \"q\" é", i), Details: "line\nnext\ttab", Assignee: []string{"ann", "bob", ""}[i%3]}
		if i%3 == 0 {
			tk.Labels, tk.Due, tk.Priority = []string{"icu", "ward-3"}, &due, tasks.PriorityUrgent
		}
		got, err := s.Create(ctx, valid(t, tk))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got.ID)
	}
	for i, id := range ids {
		if i%4 == 1 {
			if _, err := s.Update(ctx, id, 0, func(tk *tasks.Task) error { tk.Status = tasks.StatusDone; return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n > 2 {
		if err := s.Delete(ctx, ids[2], 0); err != nil {
			t.Fatal(err)
		}
	}
	return all(t, s)
}

// all lists every task of s, in id order.
func all(t *testing.T, s tasks.Store) []tasks.Task {
	t.Helper()
	var out []tasks.Task
	o := tasks.ListOptions{Limit: tasks.MaxLimit}
	for {
		p, err := s.List(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Items...)
		if p.Next == "" {
			return out
		}
		o.Cursor = p.Next
	}
}

func exportOf(t *testing.T, s tasks.Store) []byte {
	t.Helper()
	ex, _ := exchanger(t, s)
	var buf bytes.Buffer
	if _, err := tasks.Export(t.Context(), ex, &buf, time.Now()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// importInto imports stream into s through the checking reader, as the
// handler does.
func importInto(ctx context.Context, s tasks.Store, opts tasks.ImportOptions, stream []byte) (tasks.ImportResult, error) {
	im, ok := s.(tasks.Importer)
	if !ok {
		return tasks.ImportResult{}, fmt.Errorf("%T has no Import", s)
	}
	ir, err := tasks.NewImportReader(bytes.NewReader(stream))
	if err != nil {
		return tasks.ImportResult{}, err
	}
	return im.Import(ctx, opts, ir.Next)
}

func marshalTasks(t *testing.T, ts []tasks.Task) []string {
	t.Helper()
	out := make([]string, len(ts))
	for i := range ts {
		b, err := json.Marshal(&ts[i])
		if err != nil {
			t.Fatal(err)
		}
		out[i] = string(b)
	}
	return out
}

func testExportContents(t *testing.T, open func(t *testing.T) tasks.Store) {
	s := open(t)
	want := fill(t, s, 23)
	lines := strings.Split(strings.TrimSuffix(string(exportOf(t, s)), "\n"), "\n")
	var h tasks.ExchangeHeader
	if err := json.Unmarshal([]byte(lines[0]), &h); err != nil {
		t.Fatal(err)
	}
	if h.Format != tasks.ExchangeFormat || h.Version != 1 || h.Count != int64(len(want)) || h.Time.IsZero() ||
		(h.Store != "bbolt" && h.Store != "postgres") {
		t.Fatalf("header %s", lines[0])
	}
	if got := lines[1 : len(lines)-1]; !slices.Equal(got, marshalTasks(t, want)) {
		t.Fatalf("task lines differ from the tasks the API lists:\n got %q\nwant %q", got, marshalTasks(t, want))
	}
	if !strings.HasPrefix(lines[len(lines)-1], `{"trailer":true,"count":22,"sha256":"`) {
		t.Fatalf("trailer %s", lines[len(lines)-1])
	}
	// An empty store exports a header and a trailer.
	empty := exportOf(t, open(t))
	if n := bytes.Count(empty, []byte("\n")); n != 2 || !bytes.Contains(empty, []byte(`"count":0`)) {
		t.Fatalf("export of an empty store: %s", empty)
	}
}

// testExportSnapshot: writes that commit while an export runs are not in
// it, and the export's count matches its lines.
func testExportSnapshot(t *testing.T, open func(t *testing.T) tasks.Store) {
	s := open(t)
	ctx := t.Context()
	// Room in the file first (bbolt grows its file only when no reader is
	// open, so a write that had to grow it would wait for the export): big
	// tasks, then deleted.
	big := strings.Repeat("x", tasks.MaxDetailsLen)
	for range 60 {
		tk, err := s.Create(ctx, valid(t, tasks.Task{Title: "room", Details: big}))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, tk.ID, 0); err != nil {
			t.Fatal(err)
		}
	}
	before := fill(t, s, 12)
	ex, _ := exchanger(t, s)
	var (
		lines   [][]byte
		count   int64
		wrote   sync.Once
		created tasks.Task
	)
	err := ex.Export(ctx, func(sn tasks.Snapshot) error { count = sn.Count; return nil }, func(js []byte) error {
		lines = append(lines, bytes.Clone(js))
		var werr error
		wrote.Do(func() {
			// Committed before the export reads on: a task after the last
			// one, a change of the last one and a delete of the second.
			if created, werr = s.Create(ctx, valid(t, tasks.Task{Title: "during the export"})); werr != nil {
				return
			}
			if _, werr = s.Update(ctx, before[len(before)-1].ID, 0, func(tk *tasks.Task) error { tk.Title = "changed during"; return nil }); werr != nil {
				return
			}
			werr = s.Delete(ctx, before[1].ID, 0)
		})
		return werr
	})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(lines))
	for i, l := range lines {
		got[i] = string(l)
	}
	if want := marshalTasks(t, before); count != int64(len(before)) || !slices.Equal(got, want) {
		t.Fatalf("the export is not the snapshot it began with (count %d):\n got %q\nwant %q", count, got, want)
	}
	if _, err := s.Get(ctx, created.ID); err != nil {
		t.Fatalf("the write during the export was lost: %v", err)
	}
}

func testImportRoundTrip(t *testing.T, open func(t *testing.T) tasks.Store) {
	src := open(t)
	want := fill(t, src, 31)
	stream := exportOf(t, src)
	dst := open(t)
	res, err := importInto(t.Context(), dst, tasks.ImportOptions{}, stream)
	if err != nil {
		t.Fatal(err)
	}
	if res.Imported != int64(len(want)) || res.Skipped != 0 {
		t.Fatalf("imported %+v, want %d", res, len(want))
	}
	got := all(t, dst)
	if !slices.Equal(marshalTasks(t, got), marshalTasks(t, want)) {
		t.Fatalf("imported tasks differ:\n got %q\nwant %q", marshalTasks(t, got), marshalTasks(t, want))
	}
	for _, w := range want {
		g, err := dst.Get(t.Context(), w.ID)
		if err != nil || g.Version != w.Version || !g.CreatedAt.Equal(w.CreatedAt) || !g.UpdatedAt.Equal(w.UpdatedAt) {
			t.Fatalf("Get(%s) after import = %+v, %v; want %+v", w.ID, g, err, w)
		}
	}
	if !bytes.Equal(exportOf(t, dst)[bytes.IndexByte(stream, '\n'):], stream[bytes.IndexByte(stream, '\n'):]) {
		t.Fatal("exporting the imported store does not give the same task lines and trailer")
	}
	// The imported tasks keep working: they change with their versions, and
	// a new task's id sorts after theirs, even when they came from a clock
	// ahead of this store's.
	last := want[len(want)-1]
	if _, err := dst.Update(t.Context(), last.ID, last.Version, func(tk *tasks.Task) error { tk.Title = "after"; return nil }); err != nil {
		t.Fatal(err)
	}
	future := futureTask(t)
	if _, err := importInto(t.Context(), dst, tasks.ImportOptions{Mode: tasks.ImportSkipExisting}, streamOf(t, future)); err != nil {
		t.Fatal(err)
	}
	made, err := dst.Create(t.Context(), valid(t, tasks.Task{Title: "new"}))
	if err != nil {
		t.Fatal(err)
	}
	if made.ID <= future.ID {
		t.Fatalf("a task created after the import has id %s, before the imported %s", made.ID, future.ID)
	}
}

// futureTask is a task made by a store whose clock is years ahead.
func futureTask(t *testing.T) tasks.Task {
	at := time.Date(2045, 1, 1, 0, 0, 0, 0, time.UTC)
	tk := valid(t, tasks.Task{Title: "from the future"})
	if err := tasks.NewIDGen(func() time.Time { return at }).Stamp(t.Context(), &tk, at); err != nil {
		t.Fatal(err)
	}
	return tk
}

// streamOf writes an export of ts, as a store would.
func streamOf(t *testing.T, ts ...tasks.Task) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tasks.NewExportWriter(&buf)
	if err := w.Header(tasks.ExchangeHeader{Store: "test", Time: time.Now(), Count: int64(len(ts))}); err != nil {
		t.Fatal(err)
	}
	for _, l := range marshalTasks(t, ts) {
		if err := w.Task([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Trailer(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func testImportNotEmpty(t *testing.T, open func(t *testing.T) tasks.Store) {
	src := open(t)
	fill(t, src, 5)
	stream := exportOf(t, src)
	dst := open(t)
	had, err := dst.Create(t.Context(), valid(t, tasks.Task{Title: "already here"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := importInto(t.Context(), dst, tasks.ImportOptions{}, stream); !errors.Is(err, tasks.ErrNotEmpty) {
		t.Fatalf("import into a store with a task: want ErrNotEmpty, got %v", err)
	}
	if got := all(t, dst); len(got) != 1 || got[0].ID != had.ID {
		t.Fatalf("a refused import changed the store: %+v", got)
	}
}

func testImportBadStream(t *testing.T, open func(t *testing.T) tasks.Store) {
	src := open(t)
	fill(t, src, 9)
	good := exportOf(t, src)
	lines := strings.SplitAfter(string(good), "\n")
	lines = lines[:len(lines)-1] // the empty string after the last newline
	join := func(ls ...[]string) []byte { return []byte(strings.Join(slices.Concat(ls...), "")) }
	last := len(lines) - 1
	edited := slices.Clone(lines)
	edited[3] = strings.Replace(edited[3], `"title":"task`, `"title":"TASK`, 1)
	badTask := slices.Clone(lines)
	badTask[last-1] = strings.Replace(badTask[last-1], `"status":"`, `"status":"x`, 1)
	for _, tc := range []struct {
		name   string
		stream []byte
		want   string
	}{
		{"checksum", join(edited), "checksum mismatch"},
		{"truncated before the trailer", join(lines[:last]), "without its trailer"},
		{"truncated mid-line", join(lines[:last-1], []string{lines[last-1][:20]}), "truncated"},
		{"a line dropped", join(lines[:4], lines[5:]), "the trailer counts 8 tasks, the stream holds 7"},
		{"a task invalid near the end", join(badTask), "status: must be one of"},
		{"a repeated task", join(lines[:3], lines[2:]), "ids must increase"},
		{"not an export", []byte("{\"id\":\"x\"}\n"), "not a medops-tasks export"},
		{"a newer format", []byte(strings.Replace(string(good), `"version":1,`, `"version":2,`, 1)), "format version 2"},
		{"after the trailer", join(lines, []string{"{}\n"}), "data after the trailer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range tasks.ImportModes {
				dst := open(t)
				var had []tasks.Task
				if mode != tasks.ImportIntoEmpty {
					had = fill(t, dst, 4)
				}
				_, err := importInto(t.Context(), dst, tasks.ImportOptions{Mode: mode, Marker: "bad"}, tc.stream)
				var xe *tasks.ExchangeError
				if !errors.As(err, &xe) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("mode %q: want an ExchangeError saying %q, got %v", mode, tc.want, err)
				}
				if got := all(t, dst); !slices.Equal(marshalTasks(t, got), marshalTasks(t, had)) {
					t.Fatalf("mode %q: a refused import wrote %d tasks", mode, len(got)-len(had))
				}
				if m, err := dst.(tasks.Importer).RestoreMarker(t.Context()); err != nil || m != "" {
					t.Fatalf("mode %q: a refused import left the marker %q (%v)", mode, m, err)
				}
			}
		})
	}
}

func testImportModes(t *testing.T, open func(t *testing.T) tasks.Store) {
	ctx := t.Context()
	src := open(t)
	orig := fill(t, src, 6)
	stream := exportOf(t, src)
	// The destination holds the first three tasks, one of them changed
	// since, and a task of its own.
	dst := open(t)
	if _, err := importInto(ctx, dst, tasks.ImportOptions{}, streamOf(t, orig[:3]...)); err != nil {
		t.Fatal(err)
	}
	changed, err := dst.Update(ctx, orig[0].ID, 0, func(tk *tasks.Task) error { tk.Title = "changed here"; return nil })
	if err != nil {
		t.Fatal(err)
	}
	own, err := dst.Create(ctx, valid(t, tasks.Task{Title: "own"}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := importInto(ctx, dst, tasks.ImportOptions{Mode: tasks.ImportSkipExisting}, stream)
	if err != nil || res.Imported != 2 || res.Skipped != 3 {
		t.Fatalf("skip-existing: %+v %v; want 2 imported, 3 skipped", res, err)
	}
	got := all(t, dst)
	want := slices.Concat([]tasks.Task{changed}, orig[1:], []tasks.Task{own})
	if !slices.Equal(marshalTasks(t, got), marshalTasks(t, want)) {
		t.Fatalf("skip-existing:\n got %q\nwant %q", marshalTasks(t, got), marshalTasks(t, want))
	}
	res, err = importInto(ctx, dst, tasks.ImportOptions{Mode: tasks.ImportOverwrite}, stream)
	if err != nil || res.Imported != 5 || res.Skipped != 0 {
		t.Fatalf("overwrite: %+v %v; want 5 imported", res, err)
	}
	got = all(t, dst)
	want = slices.Concat(orig, []tasks.Task{own})
	if !slices.Equal(marshalTasks(t, got), marshalTasks(t, want)) {
		t.Fatalf("overwrite:\n got %q\nwant %q", marshalTasks(t, got), marshalTasks(t, want))
	}
}

func testRestoreMarker(t *testing.T, open func(t *testing.T) tasks.Store) {
	ctx := t.Context()
	src := open(t)
	fill(t, src, 3)
	stream := exportOf(t, src)
	dst := open(t)
	_, im := exchanger(t, dst)
	if m, err := im.RestoreMarker(ctx); err != nil || m != "" {
		t.Fatalf("a new store has the marker %q (%v)", m, err)
	}
	if _, err := importInto(ctx, dst, tasks.ImportOptions{Marker: "team-20260101T000000Z.ndjson.gz"}, stream); err != nil {
		t.Fatal(err)
	}
	if m, err := im.RestoreMarker(ctx); err != nil || m != "team-20260101T000000Z.ndjson.gz" {
		t.Fatalf("marker %q (%v) after an import that set it", m, err)
	}
	// An import without a marker keeps the last one.
	if _, err := importInto(ctx, dst, tasks.ImportOptions{Mode: tasks.ImportSkipExisting}, stream); err != nil {
		t.Fatal(err)
	}
	if m, _ := im.RestoreMarker(ctx); m != "team-20260101T000000Z.ndjson.gz" {
		t.Fatalf("marker %q after an import without one", m)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := im.RestoreMarker(ctx); !errors.Is(err, tasks.ErrClosed) {
		t.Fatalf("RestoreMarker after Close: %v", err)
	}
	if _, err := importInto(ctx, dst, tasks.ImportOptions{}, stream); !errors.Is(err, tasks.ErrClosed) {
		t.Fatalf("Import after Close: %v", err)
	}
	var buf bytes.Buffer
	if _, err := tasks.Export(ctx, dst.(tasks.Exporter), &buf, time.Now()); !errors.Is(err, tasks.ErrClosed) {
		t.Fatalf("Export after Close: %v", err)
	}
}
