// Package httpx holds the small HTTP helpers every medops-api package shares,
// so that each module answers errors in the same JSON shape and the request
// id travels the same way through all of them.
package httpx

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
)

// ErrorBody is the JSON envelope of every error response:
// {"error":{"code":..,"message":..,"field":..}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail describes one error. Code is a short machine-readable word
// (not_found, invalid, conflict, ...); Field names the offending input when
// there is one.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// WriteError writes a JSON error response. It never writes HTML, so clients
// can always decode what they get.
func WriteError(w http.ResponseWriter, status int, code, message, field string) {
	b, err := json.Marshal(ErrorBody{Error: ErrorDetail{Code: code, Message: message, Field: field}})
	if err != nil {
		// Marshal of three strings cannot fail; keep a fallback anyway so the
		// client still gets JSON.
		b = []byte(`{"error":{"code":"internal","message":"error encoding failed"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "internal", "response encoding failed", "")
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, err = w.Write(append(b, '\n'))
	return err
}

type ctxKey int

const infoKey ctxKey = 0

// HeaderRequestID is the header that carries the request id both ways.
const HeaderRequestID = "X-Request-Id"

// Info is what the router learns about a request on its way in, shared with
// the middleware and handlers behind it through the context. It is held by
// pointer so that a middleware can record what it learned (a valid token)
// without copying the request: a copy would hide the route pattern chi
// writes into the request from the access log.
type Info struct {
	// ID is the request id: logged, answered and forwarded upstream.
	ID string
	// Authenticated: the request presented the API's bearer token.
	Authenticated bool
}

// WithInfo returns a context carrying info.
func WithInfo(ctx context.Context, info *Info) context.Context {
	return context.WithValue(ctx, infoKey, info)
}

// InfoFrom returns the request's Info, or nil outside the router.
func InfoFrom(ctx context.Context) *Info {
	info, _ := ctx.Value(infoKey).(*Info)
	return info
}

// WithRequestID returns a context carrying a request id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return WithInfo(ctx, &Info{ID: id})
}

// RequestID returns the request id set by the router's middleware, or "".
func RequestID(ctx context.Context) string {
	if info := InfoFrom(ctx); info != nil {
		return info.ID
	}
	return ""
}

// Authenticated reports whether the request presented the API's token.
func Authenticated(ctx context.Context) bool {
	info := InfoFrom(ctx)
	return info != nil && info.Authenticated
}

// Retracter is implemented by response writers that hold a response back
// instead of sending it as it is written, as the response cache does while
// it records one.
type Retracter interface {
	// Retract drops the status, headers and body written so far and
	// reports true, or reports false when some of it has reached the client.
	Retract() bool
}

// Retract lets a handler that fails after it began to answer (an upstream
// cut off mid-body) take the answer back and send an error instead. It
// reports false when w cannot take it back; the handler must then abort the
// response (panic(http.ErrAbortHandler)), the only honest signal left.
func Retract(w http.ResponseWriter) bool {
	r, ok := w.(Retracter)
	return ok && r.Retract()
}
