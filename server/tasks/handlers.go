// Package tasks is the task module: the task type with its validation and
// merge patches, the Store interface its backends (server/store/...)
// implement, and the chi sub-router the app mounts at /api/v1/tasks, with
// its part of the OpenAPI document.
package tasks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/go-chi/chi/v5"

	"github.com/medops/medops/server/httpx"
)

// MergePatchType is the media type of RFC 7386 JSON merge patches.
const MergePatchType = "application/merge-patch+json"

// Options configure the module.
type Options struct {
	Store  Store
	Logger *slog.Logger
	// BasePath is where the router is mounted; Location headers use it.
	BasePath string
	// OnWrite runs after every successful write and before its response is
	// sent, so that a client's next read never sees a cached older answer.
	OnWrite func()
	// ReadMiddleware wraps the GET and HEAD routes (the app passes the
	// response cache). It runs after routing, so metrics and logs see the
	// route pattern even for answers the cache serves.
	ReadMiddleware func(http.Handler) http.Handler
	// RequireIfMatch refuses PATCH and DELETE without If-Match (428).
	RequireIfMatch bool
}

type handler struct {
	st             Store
	raw            RawReader // st's fast path, nil when it has none
	bufs           sync.Pool // *[]byte response buffers of the raw reads
	log            *slog.Logger
	base           string
	onWrite        func()
	requireIfMatch bool
	query          *listQuery
}

// NewRouter returns the module's routes. Not-found and method-not-allowed
// answers come from the parent router, which passes its JSON handlers down
// on Mount.
func NewRouter(opts Options) (chi.Router, error) {
	if opts.Store == nil {
		return nil, errors.New("tasks: a store is required")
	}
	h := &handler{st: opts.Store, log: opts.Logger, base: strings.TrimSuffix(opts.BasePath, "/"), onWrite: opts.OnWrite,
		requireIfMatch: opts.RequireIfMatch}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.raw, _ = opts.Store.(RawReader)
	h.query = newListQuery()
	h.bufs.New = func() any { return new([]byte) }
	if h.onWrite == nil {
		h.onWrite = func() {}
	}
	r := chi.NewRouter()
	read := chi.Router(r)
	if opts.ReadMiddleware != nil {
		read = r.With(opts.ReadMiddleware)
	}
	read.Get("/", h.handle(h.list))
	read.Head("/", h.handle(h.list))
	r.Post("/", h.handle(h.create))
	read.Get("/{id}", h.handle(h.get))
	read.Head("/{id}", h.handle(h.get))
	r.Patch("/{id}", h.handle(h.patch))
	r.Delete("/{id}", h.handle(h.delete))
	return r, nil
}

// handle turns the errors of the task domain and of the store into HTTP
// errors; httpx.ReturnHandler writes them.
func (h *handler) handle(fn httpx.HandlerFunc) http.HandlerFunc {
	return httpx.ReturnHandler(h.log, func(w http.ResponseWriter, r *http.Request) error {
		if err := fn(w, r); err != nil {
			return httpError(r.Context(), err)
		}
		return nil
	})
}

// httpError says what a failed task request answers.
func httpError(ctx context.Context, err error) error {
	var (
		he *httpx.Error
		fe *FieldError
		le *FilterError
		ce *ConflictError
	)
	switch {
	case errors.As(err, &he):
		return he
	case errors.As(err, &fe):
		return httpx.Errorf(http.StatusUnprocessableEntity, "invalid", fe.Field, fe.Message)
	case errors.As(err, &le):
		return httpx.Errorf(http.StatusBadRequest, "invalid", le.Param, le.Message)
	case errors.As(err, &ce):
		return &httpx.Error{Status: http.StatusPreconditionFailed, Code: "precondition_failed", Field: "If-Match",
			Message: fmt.Sprintf("the task is at version %d (ETag %s), which If-Match does not name", ce.Current, etag(ce.Current)),
			Header:  http.Header{"Etag": {etag(ce.Current)}}}
	case errors.Is(err, ErrNotFound):
		return httpx.Errorf(http.StatusNotFound, "not_found", "id", "no task with this id")
	case errors.Is(err, ErrBadCursor):
		return httpx.Errorf(http.StatusBadRequest, "invalid", "cursor", "cursor is not one this server returned")
	case errors.Is(err, ErrUnavailable):
		// The database is out of reach and the write was not acknowledged;
		// the client may retry once /readyz is green again.
		return &httpx.Error{Status: http.StatusServiceUnavailable, Code: "unavailable",
			Message: "the task store cannot reach its database; retry shortly",
			Header:  http.Header{"Retry-After": {"1"}}}
	case errors.Is(err, ErrTimeout):
		// This request's statement was too slow (the database answers
		// others): not an outage, and not retried blindly, since a write
		// may have landed.
		return httpx.Errorf(http.StatusGatewayTimeout, "timeout", "",
			"the task store did not answer in time; a write may or may not have been applied: read the task before retrying it")
	case errors.Is(err, ErrClosed):
		return httpx.Errorf(http.StatusServiceUnavailable, "unavailable", "", "the task store is closed")
	case ctx.Err() != nil:
		// The client went away; nobody reads this answer.
		return httpx.Errorf(http.StatusServiceUnavailable, "cancelled", "", "request cancelled")
	}
	return &httpx.Error{Status: http.StatusInternalServerError, Code: "internal", Message: "the task store failed", Err: err}
}

// readPatch reads a JSON object body and decodes it into a Patch.
func readPatch(r *http.Request, allowed ...string) (Patch, error) {
	if err := checkContentType(r, allowed...); err != nil {
		return Patch{}, err
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return Patch{}, httpx.Errorf(http.StatusRequestEntityTooLarge, "too_large", "",
				fmt.Sprintf("request body is larger than %d bytes", mb.Limit))
		}
		return Patch{}, httpx.Errorf(http.StatusBadRequest, "bad_request", "", "reading request body: "+err.Error())
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return Patch{}, httpx.Errorf(http.StatusBadRequest, "invalid_json", "", "request body must be a JSON object")
	}
	return DecodePatch(body)
}

func checkContentType(r *http.Request, allowed ...string) error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil {
		for _, a := range allowed {
			if mt == a {
				return nil
			}
		}
	}
	return httpx.Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type",
		"Content-Type must be one of "+strings.Join(allowed, ", "))
}

func (h *handler) create(w http.ResponseWriter, r *http.Request) error {
	p, err := readPatch(r, "application/json")
	if err != nil {
		return err
	}
	var t Task
	p.Apply(&t)
	t.Normalize()
	if err := t.Validate(); err != nil {
		return err
	}
	if h.raw != nil {
		created, body, err := h.raw.CreateRaw(r.Context(), t)
		if err != nil {
			return err
		}
		h.onWrite()
		w.Header().Set("Location", h.base+"/"+created.ID)
		w.Header().Set("ETag", etag(created.Version))
		writeRawJSON(w, http.StatusCreated, append(body, '\n'))
		return nil
	}
	created, err := h.st.Create(r.Context(), t)
	if err != nil {
		return err
	}
	h.onWrite()
	w.Header().Set("Location", h.base+"/"+created.ID)
	h.writeTask(w, http.StatusCreated, &created)
	return nil
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) error {
	if h.raw != nil {
		return h.getRaw(w, r)
	}
	t, err := h.st.Get(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && noneMatchHits(inm, t.Version) {
		w.Header().Set("ETag", etag(t.Version))
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h.writeTask(w, http.StatusOK, &t)
	return nil
}

func (h *handler) patch(w http.ResponseWriter, r *http.Request) error {
	pre, err := h.ifMatch(r)
	if err != nil {
		return err
	}
	p, err := readPatch(r, MergePatchType, "application/json")
	if err != nil {
		return err
	}
	var updated Task
	err = conditionally(pre, func(ifVersion int64) (err error) {
		updated, err = h.st.Update(r.Context(), chi.URLParam(r, "id"), ifVersion, func(t *Task) error {
			p.Apply(t)
			t.Normalize()
			return t.Validate()
		})
		return err
	})
	if err != nil {
		return err
	}
	h.onWrite()
	h.writeTask(w, http.StatusOK, &updated)
	return nil
}

func (h *handler) delete(w http.ResponseWriter, r *http.Request) error {
	pre, err := h.ifMatch(r)
	if err != nil {
		return err
	}
	if err := conditionally(pre, func(ifVersion int64) error {
		return h.st.Delete(r.Context(), chi.URLParam(r, "id"), ifVersion)
	}); err != nil {
		return err
	}
	h.onWrite()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) error {
	// r.URL.Query() drops what it cannot decode (?limit=%zz would list with
	// the default limit): an undecodable query is refused instead.
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return httpx.Errorf(http.StatusBadRequest, "invalid", "query", "the query string cannot be decoded: "+err.Error())
	}
	o, err := h.query.parse(q)
	if err != nil {
		return err
	}
	if h.raw != nil {
		return h.listRaw(w, r, o)
	}
	page, err := h.st.List(r.Context(), o)
	if err != nil {
		return err
	}
	_ = httpx.WriteJSON(w, http.StatusOK, listResponse{Items: page.Items, Next: page.Next})
	return nil
}

type listResponse struct {
	Items []Task `json:"items"`
	// Next is omitted on the last page.
	Next string `json:"next,omitempty"`
}

// getRaw is get on the store's fast path: the stored JSON goes out as it
// is, with the ETag from the version the store keeps beside it.
func (h *handler) getRaw(w http.ResponseWriter, r *http.Request) error {
	bp := h.bufs.Get().(*[]byte)
	defer h.putBuf(bp)
	b, version, err := h.raw.GetRaw(r.Context(), chi.URLParam(r, "id"), (*bp)[:0])
	*bp = b
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(version))
	if inm := r.Header.Get("If-None-Match"); inm != "" && noneMatchHits(inm, version) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	*bp = append(b, '\n')
	writeRawJSON(w, http.StatusOK, *bp)
	return nil
}

// listRaw is list on the store's fast path: the page's tasks are copied as
// stored into the listResponse envelope.
func (h *handler) listRaw(w http.ResponseWriter, r *http.Request, o ListOptions) error {
	bp := h.bufs.Get().(*[]byte)
	defer h.putBuf(bp)
	b := append((*bp)[:0], `{"items":`...)
	b, next, err := h.raw.ListRaw(r.Context(), o, b)
	*bp = b
	if err != nil {
		return err
	}
	if next != "" {
		// Cursors are base64url: nothing in them needs JSON escaping.
		b = append(append(append(b, `,"next":"`...), next...), '"')
	}
	*bp = append(b, "}\n"...)
	writeRawJSON(w, http.StatusOK, *bp)
	return nil
}

// maxPooledBuf keeps one huge page from pinning its buffer in the pool.
const maxPooledBuf = 256 << 10

func (h *handler) putBuf(bp *[]byte) {
	if cap(*bp) <= maxPooledBuf {
		h.bufs.Put(bp)
	}
}

// writeRawJSON writes body, which is JSON ending in a newline (as
// httpx.WriteJSON writes it).
func writeRawJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (h *handler) writeTask(w http.ResponseWriter, status int, t *Task) {
	w.Header().Set("ETag", etag(t.Version))
	_ = httpx.WriteJSON(w, status, t)
}
