package pgstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/medops/medops/internal/pgtest"
	"github.com/medops/medops/server/tasks"
)

// BenchmarkGetRaw reads tasks by id from b.RunParallel's goroutines
// (-cpu sets GOMAXPROCS; SetParallelism 32 makes 32 readers per P), on a
// local PostgreSQL, and reports how many reads a query served.
func BenchmarkGetRaw(b *testing.B) {
	srv := pgtest.Start(b)
	s := openTest(b, pgtest.WriteDSNFile(b, srv.DSN(pgtest.Database)), Options{})
	ids := make([]string, 1000)
	for i := range ids {
		tk, err := s.Create(b.Context(), tasks.Task{Title: fmt.Sprint("t", i), Status: tasks.StatusOpen, Priority: tasks.PriorityNormal, Labels: []string{}})
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = tk.ID
	}
	var queries, reads atomic.Int64
	fetch := s.reads.fetch
	s.reads = newReader(func(ctx context.Context, batch []string) (map[string]readRow, error) {
		queries.Add(1)
		reads.Add(int64(len(batch)))
		return fetch(ctx, batch)
	})
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var buf []byte
		for pb.Next() {
			var err error
			if buf, _, err = s.GetRaw(b.Context(), ids[n.Add(1)%int64(len(ids))], buf[:0]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(reads.Load())/float64(max(queries.Load(), 1)), "reads/query")
}
