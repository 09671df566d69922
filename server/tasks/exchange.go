package tasks

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// The exchange format moves every task of one store to another, or to a
// backup file and back: NDJSON, one JSON object a line.
//
//	{"format":"medops-tasks","version":1,"store":"bbolt","time":"...","count":2}
//	{"id":"01…","title":"…",…}   one line per task, as the API shows it, in id order
//	{"id":"01…","title":"…",…}
//	{"trailer":true,"count":2,"sha256":"…"}
//
// The trailer's sha256 is taken over the task lines, each with its "\n", so
// a truncated or edited file is refused as a whole before anything of it is
// kept. The header's count is the snapshot's; the trailer repeats it once
// every line has been written.
const (
	ExchangeFormat  = "medops-tasks"
	ExchangeVersion = 1
	// ExchangeMediaType is the Content-Type of an export.
	ExchangeMediaType = "application/x-ndjson"
	// maxExchangeLine bounds one line of an import: a task is at most a
	// few tens of KiB even with every character of its details escaped.
	maxExchangeLine = 1 << 20
)

// ExchangeHeader is the first line of an export.
type ExchangeHeader struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Store   string    `json:"store"`
	Time    time.Time `json:"time"`
	Count   int64     `json:"count"`
}

// ExchangeTrailer is the last line of an export.
type ExchangeTrailer struct {
	Trailer bool   `json:"trailer"`
	Count   int64  `json:"count"`
	SHA256  string `json:"sha256"`
}

// Snapshot is what a store's Export found when it opened its snapshot.
type Snapshot struct {
	// Store names the backend: "bbolt" or "postgres".
	Store string
	// Count is the number of tasks in the snapshot.
	Count int64
}

// Exporter is an optional Store method set: every task from one consistent
// snapshot, streamed.
type Exporter interface {
	// Export opens one read snapshot of every task (a bbolt read
	// transaction, a PostgreSQL REPEATABLE READ transaction), calls begin
	// with what it holds and then each with every task's JSON (the API's
	// representation, as stored) in id order. js is only valid during the
	// call. An error from begin or each ends the export with that error.
	Export(ctx context.Context, begin func(Snapshot) error, each func(js []byte) error) error
}

// ImportMode says what an import does with a store that already holds tasks.
type ImportMode string

// Import modes.
const (
	// ImportIntoEmpty refuses a store that holds any task (ErrNotEmpty).
	ImportIntoEmpty ImportMode = ""
	// ImportSkipExisting keeps a task the store already has under the same
	// id and adds the others.
	ImportSkipExisting ImportMode = "skip-existing"
	// ImportOverwrite replaces a task the store has under the same id with
	// the imported one and adds the others; tasks the import does not name
	// stay.
	ImportOverwrite ImportMode = "overwrite"
)

// ImportModes lists the modes a client may name.
var ImportModes = []ImportMode{ImportIntoEmpty, ImportSkipExisting, ImportOverwrite}

// ParseImportMode reads a mode as a client writes it ("" and "empty" are
// ImportIntoEmpty).
func ParseImportMode(s string) (ImportMode, error) {
	switch ImportMode(s) {
	case "", "empty":
		return ImportIntoEmpty, nil
	case ImportSkipExisting, ImportOverwrite:
		return ImportMode(s), nil
	}
	return "", fmt.Errorf("mode must be one of empty, %s, %s", ImportSkipExisting, ImportOverwrite)
}

// ImportOptions configure one import.
type ImportOptions struct {
	Mode ImportMode
	// Marker, when not empty, is recorded in the same transaction as the
	// tasks (RestoreMarker reads it back): restore uses it to know that a
	// backup file is already in the store.
	Marker string
}

// ImportResult counts what an import did.
type ImportResult struct {
	Imported int64 `json:"imported"`
	// Skipped are the tasks ImportSkipExisting kept as the store had them.
	Skipped int64 `json:"skipped,omitempty"`
}

// Importer is an optional Store method set: a whole export written at once.
type Importer interface {
	// Import writes every task next returns until next returns io.EOF, in
	// one transaction: any other error from next (a checksum that does not
	// match, a malformed line, a client gone), a failure, or the process
	// dying before the commit leaves the store as it was. Ids, versions and
	// timestamps are kept as given. In ImportIntoEmpty mode a store that
	// holds a task gives ErrNotEmpty, and nothing is written.
	Import(ctx context.Context, opts ImportOptions, next func() (*Task, error)) (ImportResult, error)
	// RestoreMarker returns the marker the last import recorded, or "".
	RestoreMarker(ctx context.Context) (string, error)
}

// ErrNotEmpty: an import without a merge mode found tasks in the store.
var ErrNotEmpty = errors.New("task store is not empty")

// ExchangeError is an import stream that is not a valid export: it names
// the line and what is wrong with it.
type ExchangeError struct {
	Line    int // 1-based; 0 for the stream as a whole
	Message string
	// Err is the read error behind Message, if one is.
	Err error
}

func (e *ExchangeError) Unwrap() error { return e.Err }

func (e *ExchangeError) Error() string {
	if e.Line == 0 {
		return "import: " + e.Message
	}
	return fmt.Sprintf("import line %d: %s", e.Line, e.Message)
}

func exchangeErrorf(line int, format string, args ...any) error {
	return &ExchangeError{Line: line, Message: fmt.Sprintf(format, args...)}
}

// ExportWriter writes an export: the header, the task lines, the trailer.
type ExportWriter struct {
	w     *bufio.Writer
	sum   hash.Hash
	count int64
}

// NewExportWriter writes an export to w.
func NewExportWriter(w io.Writer) *ExportWriter {
	return &ExportWriter{w: bufio.NewWriterSize(w, 64<<10), sum: sha256.New()}
}

// Header writes the first line.
func (e *ExportWriter) Header(h ExchangeHeader) error {
	h.Format, h.Version = ExchangeFormat, ExchangeVersion
	return e.line(h)
}

// Task writes one task line from its JSON.
func (e *ExportWriter) Task(js []byte) error {
	if bytes.IndexByte(js, '\n') >= 0 {
		// encoding/json never writes a raw newline; a stored value that
		// has one would break the line framing.
		return fmt.Errorf("exporting: a stored task holds a raw newline: %.40s", js)
	}
	e.count++
	e.sum.Write(js)
	e.sum.Write([]byte{'\n'})
	if _, err := e.w.Write(js); err != nil {
		return err
	}
	return e.w.WriteByte('\n')
}

// Trailer writes the last line and flushes; it returns what it wrote.
func (e *ExportWriter) Trailer() (ExchangeTrailer, error) {
	t := ExchangeTrailer{Trailer: true, Count: e.count, SHA256: hex.EncodeToString(e.sum.Sum(nil))}
	if err := e.line(t); err != nil {
		return t, err
	}
	return t, e.w.Flush()
}

// Flush sends what is buffered.
func (e *ExportWriter) Flush() error { return e.w.Flush() }

func (e *ExportWriter) line(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := e.w.Write(b); err != nil {
		return err
	}
	return e.w.WriteByte('\n')
}

// Export writes the whole export of ex to w, with now as the header's time,
// and returns the trailer. It holds one task at a time.
func Export(ctx context.Context, ex Exporter, w io.Writer, now time.Time) (ExchangeTrailer, error) {
	ew := NewExportWriter(w)
	var header int64 = -1
	err := ex.Export(ctx, func(s Snapshot) error {
		header = s.Count
		return ew.Header(ExchangeHeader{Store: s.Store, Time: now.UTC().Truncate(time.Second), Count: s.Count})
	}, ew.Task)
	if err != nil {
		return ExchangeTrailer{}, err
	}
	if ew.count != header {
		// A snapshot cannot change under the export; this is a store bug.
		return ExchangeTrailer{}, fmt.Errorf("exporting: the snapshot counted %d tasks but %d were read", header, ew.count)
	}
	return ew.Trailer()
}

// ImportReader reads an export line by line and checks it as it goes: the
// header first, every task (a valid task with its server fields set, ids
// strictly increasing), and at the end the trailer's count and checksum.
// Next returns io.EOF only after a trailer that matches; everything else
// that is wrong comes back as an *ExchangeError.
type ImportReader struct {
	r      *bufio.Reader
	header ExchangeHeader
	line   int
	sum    hash.Hash
	count  int64
	lastID string
	done   bool
}

// NewImportReader reads the header line of r.
func NewImportReader(r io.Reader) (*ImportReader, error) {
	ir := &ImportReader{r: bufio.NewReaderSize(r, 64<<10), sum: sha256.New()}
	line, err := ir.next()
	if err == io.EOF {
		return nil, exchangeErrorf(0, "the stream is empty; an export starts with a header line")
	}
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ir.header); err != nil || ir.header.Format != ExchangeFormat {
		return nil, exchangeErrorf(1, "not a %s export: the first line must be its header, %s", ExchangeFormat,
			`{"format":"medops-tasks","version":1,...}`)
	}
	if ir.header.Version != ExchangeVersion {
		return nil, exchangeErrorf(1, "format version %d is not one this server reads (%d)", ir.header.Version, ExchangeVersion)
	}
	return ir, nil
}

// Header is the stream's header line.
func (ir *ImportReader) Header() ExchangeHeader { return ir.header }

// Count is the number of tasks read so far.
func (ir *ImportReader) Count() int64 { return ir.count }

// next returns the next line without its newline, or io.EOF.
func (ir *ImportReader) next() ([]byte, error) {
	line, err := ir.r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		var long []byte
		long = append(long, line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(long) > maxExchangeLine {
				return nil, exchangeErrorf(ir.line+1, "the line is longer than %d bytes", maxExchangeLine)
			}
			line, err = ir.r.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	case err == io.EOF && len(line) == 0:
		return nil, io.EOF
	}
	if err != nil && err != io.EOF {
		// A body cut short, a corrupt gzip stream, a client that stalled.
		return nil, &ExchangeError{Message: "reading the stream: " + err.Error(), Err: err}
	}
	ir.line++
	if err == io.EOF {
		return nil, exchangeErrorf(ir.line, "the last line has no newline: the stream is truncated")
	}
	return line[:len(line)-1], nil
}

var trailerPrefix = []byte(`{"trailer":`)

// Next returns the next task, or io.EOF after a trailer that matches what
// was read.
func (ir *ImportReader) Next() (*Task, error) {
	if ir.done {
		return nil, io.EOF
	}
	line, err := ir.next()
	if err == io.EOF {
		return nil, exchangeErrorf(0, "the stream ends after %d tasks without its trailer: it is truncated", ir.count)
	}
	if err != nil {
		return nil, err
	}
	if bytes.HasPrefix(line, trailerPrefix) {
		return nil, ir.trailer(line)
	}
	ir.sum.Write(line)
	ir.sum.Write([]byte{'\n'})
	var t Task
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return nil, exchangeErrorf(ir.line, "not a task: %v", err)
	}
	if err := checkImported(&t, ir.lastID); err != nil {
		return nil, exchangeErrorf(ir.line, "task %s: %v", t.ID, err)
	}
	ir.lastID = t.ID
	ir.count++
	return &t, nil
}

func (ir *ImportReader) trailer(line []byte) error {
	var tr ExchangeTrailer
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tr); err != nil || !tr.Trailer {
		return exchangeErrorf(ir.line, "malformed trailer")
	}
	if tr.Count != ir.count {
		return exchangeErrorf(ir.line, "the trailer counts %d tasks, the stream holds %d", tr.Count, ir.count)
	}
	if ir.header.Count != ir.count {
		return exchangeErrorf(ir.line, "the header counts %d tasks, the stream holds %d", ir.header.Count, ir.count)
	}
	if got := hex.EncodeToString(ir.sum.Sum(nil)); got != tr.SHA256 {
		return exchangeErrorf(ir.line, "checksum mismatch: the task lines hash to sha256 %s, the trailer says %s", got, tr.SHA256)
	}
	if _, err := ir.next(); err != io.EOF {
		if err == nil {
			return exchangeErrorf(ir.line, "data after the trailer")
		}
		return err
	}
	ir.done = true
	return io.EOF
}

// checkImported checks what a store's Create would have made sure of: a
// valid task with an id, a version and UTC timestamps. after is the id of
// the previous task: an export is in id order, without repeats.
func checkImported(t *Task, after string) error {
	switch {
	case !ValidID(t.ID):
		return errors.New("id is not a task id")
	case t.ID <= after:
		return fmt.Errorf("ids must increase (an export is in id order); it follows %s", after)
	case t.Version < 1:
		return errors.New("version must be at least 1")
	case t.CreatedAt.IsZero() || t.UpdatedAt.IsZero():
		return errors.New("createdAt and updatedAt are required")
	case t.Labels == nil:
		return errors.New("labels must be a list (empty: [])")
	}
	if err := t.Validate(); err != nil {
		return err
	}
	// What encoding/json writes of a timestamp comes back in the zone it
	// names; stores keep UTC, as Create does.
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	if t.Due != nil {
		d := t.Due.UTC()
		t.Due = &d
	}
	return nil
}
