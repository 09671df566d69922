package tasks

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/medops/medops/server/httpx"
)

// Paths of the exchange routes, after the collection path: custom methods
// on the collection, as in /api/v1/tasks:export.
const (
	ExportSuffix = ":export"
	ImportSuffix = ":import"
)

// importIdle is how long an import waits for the next bytes of its body.
// The server's ReadTimeout would cut a long import off whatever its pace;
// this cuts off only a client that stalls, which would otherwise hold the
// store's write lock (bbolt) or table lock (PostgreSQL) for ever.
const importIdle = time.Minute

// MountExchange adds GET prefix:export and POST prefix:import to r, beside
// the module's router mounted at prefix. The app routes them outside the
// response cache, asks for the token on both (they are never anonymous
// reads) and lets the import's body past server.maxBodySize
// (ExchangeBodyUnlimited).
func MountExchange(r chi.Router, prefix string, opts Options) error {
	if opts.Store == nil {
		return errors.New("tasks: a store is required")
	}
	h := &handler{st: opts.Store, log: opts.Logger, onWrite: opts.OnWrite}
	if h.onWrite == nil {
		h.onWrite = func() {}
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	r.Get(prefix+ExportSuffix, h.handle(h.export))
	r.Post(prefix+ImportSuffix, h.handle(h.importTasks))
	return nil
}

// ExchangeBodyUnlimited reports whether r is an import, whose body is a
// whole store and so not bound by the server's body limit.
func ExchangeBodyUnlimited(r *http.Request, prefix string) bool {
	return r.Method == http.MethodPost && r.URL.Path == prefix+ImportSuffix
}

func (h *handler) export(w http.ResponseWriter, r *http.Request) error {
	ex, ok := h.st.(Exporter)
	if !ok {
		return httpx.Errorf(http.StatusNotImplemented, "not_implemented", "", "this task store cannot export")
	}
	// An export lasts as long as the store is large: the write timeout
	// meant for ordinary answers does not apply (the client's going away
	// still ends it, through the request's context).
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	cw := &countingWriter{w: w}
	started := false
	_, err := Export(r.Context(), exportStarter{ex, func() {
		started = true
		hd := w.Header()
		hd.Set("Content-Type", ExchangeMediaType)
		hd.Set("Cache-Control", "no-store")
		hd.Set("Content-Disposition", `attachment; filename="tasks.ndjson"`)
	}}, cw, time.Now())
	switch {
	case err == nil:
		return nil
	case !started || cw.n == 0:
		// Nothing reached the client: it gets a proper error.
		return err
	}
	// The status and part of the stream are out. Cutting the connection is
	// the one honest signal left; the missing trailer tells the client the
	// export is incomplete.
	h.log.ErrorContext(r.Context(), "export failed mid-stream", "err", err, "bytesSent", cw.n)
	panic(http.ErrAbortHandler)
}

// exportStarter calls started before the header line is written, so the
// headers are set only for an export that found its snapshot.
type exportStarter struct {
	Exporter
	started func()
}

func (e exportStarter) Export(ctx context.Context, begin func(Snapshot) error, each func([]byte) error) error {
	return e.Exporter.Export(ctx, func(s Snapshot) error { e.started(); return begin(s) }, each)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (h *handler) importTasks(w http.ResponseWriter, r *http.Request) error {
	im, ok := h.st.(Importer)
	if !ok {
		return httpx.Errorf(http.StatusNotImplemented, "not_implemented", "", "this task store cannot import")
	}
	mode, err := ParseImportMode(r.URL.Query().Get("mode"))
	if err != nil {
		return httpx.Errorf(http.StatusBadRequest, "invalid", "mode", err.Error())
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != ExchangeMediaType && mt != "application/octet-stream" {
			return httpx.Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type",
				"Content-Type must be "+ExchangeMediaType+" (an export of medops-api)")
		}
	}
	body := io.Reader(&idleReader{r: r.Body, rc: http.NewResponseController(w)})
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return httpx.Errorf(http.StatusBadRequest, "invalid_export", "Content-Encoding", "the body is not gzip: "+err.Error())
		}
		defer zr.Close()
		body = zr
	default:
		return httpx.Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Encoding",
			"Content-Encoding must be gzip or none, not "+enc)
	}
	ir, err := NewImportReader(body)
	if err != nil {
		return exchangeHTTPError(err)
	}
	res, err := im.Import(r.Context(), ImportOptions{Mode: mode}, ir.Next)
	if err != nil {
		return exchangeHTTPError(err)
	}
	h.onWrite()
	h.log.InfoContext(r.Context(), "tasks imported", "imported", res.Imported, "skipped", res.Skipped,
		"mode", string(mode), "fromStore", ir.Header().Store)
	return httpx.WriteJSON(w, http.StatusOK, res)
}

// exchangeHTTPError says what a failed import answers; what is not the
// import's own goes through httpError.
func exchangeHTTPError(err error) error {
	var xe *ExchangeError
	switch {
	case errors.As(err, &xe):
		return httpx.Errorf(http.StatusBadRequest, "invalid_export", "body", xe.Error()+"; nothing was imported")
	case errors.Is(err, ErrNotEmpty):
		return httpx.Errorf(http.StatusConflict, "not_empty", "mode", fmt.Sprintf(
			"the task store is not empty; nothing was imported. Import into an empty store, or name how to merge: ?mode=%s keeps the tasks already here, ?mode=%s replaces them",
			ImportSkipExisting, ImportOverwrite))
	}
	return err
}

// idleReader moves the connection's read deadline forward before each
// read: an import may take long, but not stall.
type idleReader struct {
	r  io.Reader
	rc *http.ResponseController
}

func (i *idleReader) Read(p []byte) (int, error) {
	_ = i.rc.SetReadDeadline(time.Now().Add(importIdle))
	return i.r.Read(p)
}
