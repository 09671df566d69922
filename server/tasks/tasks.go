// Package tasks is the task module: a chi sub-router over the bbolt store,
// mounted by the app at /api/v1/tasks.
package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/medops/medops/server/httpx"
	"github.com/medops/medops/server/store"
)

// MergePatchType is the media type of RFC 7386 JSON merge patches.
const MergePatchType = "application/merge-patch+json"

// Store is what the module needs of a task store: the embedded bbolt store
// and the PostgreSQL store (server/store/pgstore) both provide it.
type Store interface {
	Create(ctx context.Context, t store.Task) (store.Task, error)
	Get(ctx context.Context, id string) (store.Task, error)
	Update(ctx context.Context, id string, ifVersion int64, mutate func(*store.Task) error) (store.Task, error)
	Delete(ctx context.Context, id string, ifVersion int64) error
	List(ctx context.Context, o store.ListOptions) (store.Page, error)
}

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
}

type handler struct {
	st      Store
	log     *slog.Logger
	base    string
	onWrite func()
}

// NewRouter returns the module's routes. Not-found and method-not-allowed
// answers come from the parent router, which passes its JSON handlers down
// on Mount.
func NewRouter(opts Options) (chi.Router, error) {
	if opts.Store == nil {
		return nil, errors.New("tasks: a store is required")
	}
	h := &handler{st: opts.Store, log: opts.Logger, base: strings.TrimSuffix(opts.BasePath, "/"), onWrite: opts.OnWrite}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.onWrite == nil {
		h.onWrite = func() {}
	}
	r := chi.NewRouter()
	read := chi.Router(r)
	if opts.ReadMiddleware != nil {
		read = r.With(opts.ReadMiddleware)
	}
	read.Get("/", h.list)
	read.Head("/", h.list)
	r.Post("/", h.create)
	read.Get("/{id}", h.get)
	read.Head("/{id}", h.get)
	r.Patch("/{id}", h.patch)
	r.Delete("/{id}", h.delete)
	return r, nil
}

// writable reports the fields a client may set; the rest of the task (id,
// createdAt, updatedAt, version) is the server's.
func writable(k string) bool {
	switch k {
	case "title", "details", "priority", "status", "assignee", "due", "labels":
		return true
	}
	return false
}

func readOnly(k string) bool {
	switch k {
	case "id", "createdAt", "updatedAt", "version":
		return true
	}
	return false
}

// input is the typed form of a create body or a merge patch. Pointers tell
// "absent" from "empty"; due stays a string so its parse error names it.
type input struct {
	Title    *string   `json:"title"`
	Details  *string   `json:"details"`
	Priority *string   `json:"priority"`
	Status   *string   `json:"status"`
	Assignee *string   `json:"assignee"`
	Due      *string   `json:"due"`
	Labels   *[]string `json:"labels"`
}

// requestError is an error answer decided while reading a request.
type requestError struct {
	status      int
	code, field string
	msg         string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(code, field, msg string) *requestError {
	return &requestError{status: http.StatusBadRequest, code: code, field: field, msg: msg}
}

func writeErr(w http.ResponseWriter, err error) bool {
	var re *requestError
	if errors.As(err, &re) {
		httpx.WriteError(w, re.status, re.code, re.msg, re.field)
		return true
	}
	var fe *store.FieldError
	if errors.As(err, &fe) {
		httpx.WriteError(w, http.StatusUnprocessableEntity, "invalid", fe.Message, fe.Field)
		return true
	}
	return false
}

// readObject reads a JSON object body, checks its keys and decodes it into
// an input. It returns the raw members too (the merge patch needs to know
// which members are null).
func readObject(r *http.Request, allowed ...string) (map[string]json.RawMessage, input, error) {
	var in input
	if err := checkContentType(r, allowed...); err != nil {
		return nil, in, err
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, in, &requestError{status: http.StatusRequestEntityTooLarge, code: "too_large",
				msg: fmt.Sprintf("request body is larger than %d bytes", mb.Limit)}
		}
		return nil, in, badRequest("bad_request", "", "reading request body: "+err.Error())
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, in, badRequest("invalid_json", "", "request body must be a JSON object")
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return nil, in, badRequest("invalid_json", "", "request body is not valid JSON: "+err.Error())
	}
	for k := range members {
		if readOnly(k) {
			return nil, in, badRequest("read_only", k, fmt.Sprintf("field %q is set by the server", k))
		}
		if !writable(k) {
			return nil, in, badRequest("unknown_field", k, fmt.Sprintf("unknown field %q", k))
		}
	}
	if err := json.Unmarshal(body, &in); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, in, badRequest("invalid_type", te.Field, fmt.Sprintf("field %q must be %s, not %s", te.Field, jsonType(te.Type.String()), te.Value))
		}
		return nil, in, badRequest("invalid_json", "", "request body is not valid JSON: "+err.Error())
	}
	return members, in, nil
}

func jsonType(goType string) string {
	switch goType {
	case "string":
		return "a string"
	case "[]string":
		return "an array of strings"
	}
	return goType
}

func checkContentType(r *http.Request, allowed ...string) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return &requestError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
			field: "Content-Type", msg: "Content-Type must be one of " + strings.Join(allowed, ", ")}
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		for _, a := range allowed {
			if mt == a {
				return nil
			}
		}
	}
	return &requestError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
		field: "Content-Type", msg: "Content-Type must be one of " + strings.Join(allowed, ", ")}
}

func parseDue(s string) (*time.Time, error) {
	d, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, &store.FieldError{Field: "due", Message: "must be an RFC 3339 time such as 2030-01-02T15:04:05Z"}
	}
	return &d, nil
}

func (h *handler) create(w http.ResponseWriter, r *http.Request) {
	_, in, err := readObject(r, "application/json")
	if err != nil {
		writeErr(w, err)
		return
	}
	var t store.Task
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&t.Title, in.Title)
	set(&t.Details, in.Details)
	set(&t.Priority, in.Priority)
	set(&t.Status, in.Status)
	set(&t.Assignee, in.Assignee)
	if in.Labels != nil {
		t.Labels = *in.Labels
	}
	if in.Due != nil {
		if t.Due, err = parseDue(*in.Due); err != nil {
			writeErr(w, err)
			return
		}
	}
	created, err := h.st.Create(r.Context(), t)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	h.onWrite()
	w.Header().Set("Location", h.base+"/"+created.ID)
	h.writeTask(w, http.StatusCreated, &created)
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) {
	t, err := h.st.Get(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && noneMatchHits(inm, t.Version) {
		w.Header().Set("ETag", etag(t.Version))
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.writeTask(w, http.StatusOK, &t)
}

func (h *handler) patch(w http.ResponseWriter, r *http.Request) {
	ifVersion, err := ifMatch(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	members, in, err := readObject(r, MergePatchType, "application/json")
	if err != nil {
		writeErr(w, err)
		return
	}
	var due *time.Time
	if in.Due != nil {
		if due, err = parseDue(*in.Due); err != nil {
			writeErr(w, err)
			return
		}
	}
	updated, err := h.st.Update(r.Context(), chi.URLParam(r, "id"), ifVersion, func(t *store.Task) error {
		applyMergePatch(t, members, &in, due)
		return nil
	})
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	h.onWrite()
	h.writeTask(w, http.StatusOK, &updated)
}

// applyMergePatch applies an RFC 7386 merge patch to a task. The task is a
// flat object (labels is an array, which a merge patch replaces whole), so
// each member either replaces a field or, when null, removes it: the field
// goes back to its zero value, and Normalize then restores the default of
// priority and status.
func applyMergePatch(t *store.Task, members map[string]json.RawMessage, in *input, due *time.Time) {
	isNull := func(k string) bool { return bytes.Equal(bytes.TrimSpace(members[k]), []byte("null")) }
	str := func(k string, dst *string, src *string) {
		if _, ok := members[k]; !ok {
			return
		}
		if isNull(k) || src == nil {
			*dst = ""
			return
		}
		*dst = *src
	}
	str("title", &t.Title, in.Title)
	str("details", &t.Details, in.Details)
	str("priority", &t.Priority, in.Priority)
	str("status", &t.Status, in.Status)
	str("assignee", &t.Assignee, in.Assignee)
	if _, ok := members["labels"]; ok {
		if isNull("labels") || in.Labels == nil {
			t.Labels = nil
		} else {
			t.Labels = append([]string(nil), (*in.Labels)...)
		}
	}
	if _, ok := members["due"]; ok {
		if due == nil {
			t.Due = nil
		} else {
			d := *due
			t.Due = &d
		}
	}
}

func (h *handler) delete(w http.ResponseWriter, r *http.Request) {
	ifVersion, err := ifMatch(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	if err := h.st.Delete(r.Context(), chi.URLParam(r, "id"), ifVersion); err != nil {
		h.storeError(w, r, err)
		return
	}
	h.onWrite()
	w.WriteHeader(http.StatusNoContent)
}

// listParam reports the query parameters of GET /.
func listParam(k string) bool {
	switch k {
	case "status", "assignee", "priority", "label", "cursor", "limit":
		return true
	}
	return false
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if !listParam(k) {
			httpx.WriteError(w, http.StatusBadRequest, "unknown_parameter", fmt.Sprintf("unknown query parameter %q", k), k)
			return
		}
	}
	o := store.ListOptions{
		Status: q.Get("status"), Assignee: q.Get("assignee"), Priority: q.Get("priority"),
		Label: q.Get("label"), Cursor: q.Get("cursor"),
	}
	switch {
	case o.Status != "" && !store.ValidStatus(o.Status):
		httpx.WriteError(w, http.StatusBadRequest, "invalid", "status must be one of "+strings.Join(store.Statuses, ", "), "status")
		return
	case o.Priority != "" && !store.ValidPriority(o.Priority):
		httpx.WriteError(w, http.StatusBadRequest, "invalid", "priority must be one of "+strings.Join(store.Priorities, ", "), "priority")
		return
	case o.Label != "" && !store.ValidLabel(o.Label):
		httpx.WriteError(w, http.StatusBadRequest, "invalid", "label must be a short lower-case slug", "label")
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			httpx.WriteError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("limit must be a whole number from 1 (values above %d are capped)", store.MaxLimit), "limit")
			return
		}
		o.Limit = n
	}
	page, err := h.st.List(r.Context(), o)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	_ = httpx.WriteJSON(w, http.StatusOK, listResponse{Items: page.Items, Next: page.Next})
}

type listResponse struct {
	Items []store.Task `json:"items"`
	// Next is omitted on the last page.
	Next string `json:"next,omitempty"`
}

func (h *handler) writeTask(w http.ResponseWriter, status int, t *store.Task) {
	w.Header().Set("ETag", etag(t.Version))
	_ = httpx.WriteJSON(w, status, t)
}

func (h *handler) storeError(w http.ResponseWriter, r *http.Request, err error) {
	if writeErr(w, err) {
		return
	}
	var ce *store.ConflictError
	switch {
	case errors.As(err, &ce):
		w.Header().Set("ETag", etag(ce.Current))
		httpx.WriteError(w, http.StatusPreconditionFailed, "precondition_failed",
			fmt.Sprintf("the task is at version %d; If-Match asked for %d", ce.Current, ce.Expected), "If-Match")
	case errors.Is(err, store.ErrNotFound):
		httpx.WriteError(w, http.StatusNotFound, "not_found", "no task with this id", "id")
	case errors.Is(err, store.ErrBadCursor):
		httpx.WriteError(w, http.StatusBadRequest, "invalid", "cursor is not one this server returned", "cursor")
	case errors.Is(err, store.ErrUnavailable):
		// The database is out of reach and the write was not acknowledged;
		// the client may retry once /readyz is green again.
		w.Header().Set("Retry-After", "1")
		httpx.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the task store cannot reach its database; retry shortly", "")
	case errors.Is(err, store.ErrClosed):
		httpx.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the task store is closed", "")
	case r.Context().Err() != nil:
		// The client went away; nobody reads this answer.
		httpx.WriteError(w, http.StatusServiceUnavailable, "cancelled", "request cancelled", "")
	default:
		h.log.ErrorContext(r.Context(), "task store failed", "err", err, "request_id", httpx.RequestID(r.Context()))
		httpx.WriteError(w, http.StatusInternalServerError, "internal", "the task store failed", "")
	}
}

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// ifMatch reads If-Match: absent means unconditional (0), "*" means any
// existing version (also 0: the store reports a missing task anyway), one
// strong ETag is the expected version.
func ifMatch(r *http.Request) (int64, error) {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	if v == "" || v == "*" {
		return 0, nil
	}
	if strings.Contains(v, ",") {
		return 0, badRequest("invalid", "If-Match", "If-Match must hold one ETag")
	}
	if strings.HasPrefix(v, "W/") {
		// A weak ETag never matches under the strong comparison If-Match
		// uses; -1 is a version no task has, so the store answers 412.
		return -1, nil
	}
	n, err := strconv.ParseInt(strings.Trim(v, `"`), 10, 64)
	if err != nil || len(v) < 3 || v[0] != '"' || v[len(v)-1] != '"' || n < 1 {
		return 0, badRequest("invalid", "If-Match", `If-Match must be an ETag such as "3"`)
	}
	return n, nil
}

// noneMatchHits reports whether If-None-Match names the current version,
// using the weak comparison RFC 9110 prescribes for it.
func noneMatchHits(header string, version int64) bool {
	want := etag(version)
	for _, part := range strings.Split(header, ",") {
		p := strings.TrimSpace(part)
		if p == "*" || strings.TrimPrefix(p, "W/") == want {
			return true
		}
	}
	return false
}
