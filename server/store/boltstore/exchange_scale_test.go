package boltstore

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medops/medops/server/tasks"
)

// TestExportScale measures an export of many tasks against listing them
// all page by page (the baseline a client had before), in the same run:
// time, and the peak Go heap above what the store held before each. It
// also measures the import that fills the store (one transaction). Run it
// with MEDOPS_EXPORT_SCALE=1000000; without it, it is skipped.
func TestExportScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MEDOPS_EXPORT_SCALE"))
	if n <= 0 {
		t.Skip("set MEDOPS_EXPORT_SCALE=<tasks> (e.g. 1000000) to measure an export of that many tasks")
	}
	s := openTest(t)
	ctx := t.Context()
	ids := tasks.NewIDGen(time.Now)
	at := time.Now().UTC()
	i := 0
	next := func() (*tasks.Task, error) {
		if i == n {
			return nil, io.EOF
		}
		tk := tasks.Task{Title: fmt.Sprintf("task %d", i), Details: "two tubes, fasting", Priority: "normal",
			Status: "open", Assignee: "ann", Labels: []string{"lab"}}
		if err := ids.Stamp(ctx, &tk, at); err != nil {
			return nil, err
		}
		i++
		return &tk, nil
	}
	importTime, importPeak := measure(func() {
		if _, err := s.Import(ctx, tasks.ImportOptions{}, next); err != nil {
			t.Fatal(err)
		}
	})
	listTime, listPeak := measure(func() {
		o := tasks.ListOptions{Limit: tasks.MaxLimit}
		var buf []byte
		pages := 0
		for {
			b, nextCursor, err := s.ListRaw(ctx, o, buf[:0])
			if err != nil {
				t.Fatal(err)
			}
			buf = b
			_, _ = io.Discard.Write(b)
			pages++
			if nextCursor == "" {
				break
			}
			o.Cursor = nextCursor
		}
		t.Logf("list: %d pages of %d", pages, tasks.MaxLimit)
	})
	var sent countWriter
	exportTime, exportPeak := measure(func() {
		tr, err := tasks.Export(ctx, s, &sent, time.Now())
		if err != nil || tr.Count != int64(n) {
			t.Fatalf("export: %+v %v", tr, err)
		}
	})
	fi, _ := os.Stat(s.Path())
	res, _ := json.Marshal(map[string]any{"tasks": n, "fileMiB": fi.Size() >> 20, "exportMiB": sent.n >> 20})
	t.Logf("%s", res)
	t.Logf("import (one transaction): %v, peak heap +%d KiB", importTime.Round(time.Millisecond), importPeak>>10)
	t.Logf("list all pages (baseline): %v, peak heap +%d KiB", listTime.Round(time.Millisecond), listPeak>>10)
	t.Logf("export: %v, peak heap +%d KiB", exportTime.Round(time.Millisecond), exportPeak>>10)
	t.Logf("export / list-all: time %.2f×, peak heap %.2f×", float64(exportTime)/float64(listTime), float64(exportPeak)/float64(max(listPeak, 1)))
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// measure runs fn and returns its time and the peak heap in use above the
// heap before it, sampled every millisecond.
func measure(fn func()) (time.Duration, uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
			}
		}
	})
	start := time.Now()
	fn()
	d := time.Since(start)
	close(stop)
	wg.Wait()
	if p := peak.Load(); p > base {
		return d, p - base
	}
	return d, 0
}
