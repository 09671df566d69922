package pgstore

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/medops/medops/internal/pgtest"
	"github.com/medops/medops/server/store/boltstore"
	"github.com/medops/medops/server/store/storetest"
	"github.com/medops/medops/server/tasks"
)

func TestExchangeConformance(t *testing.T) {
	srv := pgtest.Start(t)
	n := 0
	storetest.RunExchange(t, func(t *testing.T) tasks.Store {
		n++
		dsn := srv.CreateDatabase(t, fmt.Sprintf("exchange_%d", n))
		return openTest(t, pgtest.WriteDSNFile(t, dsn), Options{})
	})
}

// TestBoltExportImportsIntoPostgres is the move from the one-replica
// default to PostgreSQL (docs/ha.md): an export of the bbolt store imported
// into PostgreSQL gives the same tasks, byte for byte, and exporting them
// again gives the same task lines and checksum.
func TestBoltExportImportsIntoPostgres(t *testing.T) {
	ctx := t.Context()
	bolt, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	due := time.Date(2030, 3, 4, 5, 6, 7, 0, time.UTC)
	var ids []string
	for i := range 300 {
		tk := tasks.Task{Title: fmt.Sprintf("moved %d é \"q\"", i), Details: "a\nb", Labels: []string{}}
		if i%2 == 0 {
			tk.Due, tk.Labels, tk.Assignee = &due, []string{"ward-7"}, "ann"
		}
		tk.Normalize()
		made, err := bolt.Create(ctx, tk)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, made.ID)
	}
	for _, id := range ids[:100] {
		if _, err := bolt.Update(ctx, id, 0, func(tk *tasks.Task) error { tk.Status = tasks.StatusInProgress; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	var fromBolt bytes.Buffer
	trBolt, err := tasks.Export(ctx, bolt, &fromBolt, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	srv := pgtest.Start(t)
	pg := openTest(t, pgtest.WriteDSNFile(t, srv.CreateDatabase(t, "moved")), Options{})
	ir, err := tasks.NewImportReader(bytes.NewReader(fromBolt.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if ir.Header().Store != "bbolt" {
		t.Fatalf("header names store %q", ir.Header().Store)
	}
	res, err := pg.Import(ctx, tasks.ImportOptions{}, ir.Next)
	if err != nil || res.Imported != 300 {
		t.Fatalf("import: %+v %v", res, err)
	}
	for _, id := range ids {
		want, wv, err := bolt.GetRaw(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, gv, err := pg.GetRaw(ctx, id, nil)
		if err != nil || gv != wv || !bytes.Equal(got, want) {
			t.Fatalf("task %s in PostgreSQL: %s (version %d, %v); in bbolt: %s (version %d)", id, got, gv, err, want, wv)
		}
	}
	var fromPG bytes.Buffer
	trPG, err := tasks.Export(ctx, pg, &fromPG, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if trPG != trBolt {
		t.Fatalf("trailers differ: PostgreSQL %+v, bbolt %+v", trPG, trBolt)
	}
}
