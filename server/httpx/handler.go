package httpx

import (
	"errors"
	"log/slog"
	"net/http"
)

// Error is an error answer: the HTTP status, the fields of the JSON error
// body, headers to send with it, and the cause, which is logged but never
// sent.
type Error struct {
	Status  int
	Code    string
	Message string
	Field   string
	// Header is added to the response (e.g. the current ETag on a 412).
	Header http.Header
	// Err is the cause of an internal error.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf is an *Error without headers or cause.
func Errorf(status int, code, field, message string) *Error {
	return &Error{Status: status, Code: code, Field: field, Message: message}
}

// HandlerFunc is a handler that returns its error answer instead of
// writing it, so that every failure leaves through ReturnHandler.
type HandlerFunc func(http.ResponseWriter, *http.Request) error

// ReturnHandler adapts h to an http.Handler. When h returns an error and
// has not written, the error is answered as JSON: an *Error (found with
// errors.As) as it says, anything else as a 500 that is logged with the
// request id and tells the client nothing of its cause.
func ReturnHandler(log *slog.Logger, h HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var he *Error
		if !errors.As(err, &he) {
			he = &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error", Err: err}
		}
		if he.Status >= http.StatusInternalServerError && he.Err != nil {
			log.ErrorContext(r.Context(), he.Message, "err", he.Err, "request_id", RequestID(r.Context()))
		}
		for k, v := range he.Header {
			w.Header()[k] = v
		}
		WriteError(w, he.Status, he.Code, he.Message, he.Field)
	}
}
