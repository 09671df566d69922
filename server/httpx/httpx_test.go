package httpx

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWriteError(t *testing.T) {
	for _, tc := range []struct {
		name, field, want string
	}{
		{"with field", "title", `{"error":{"code":"invalid","message":"is \"required\"","field":"title"}}` + "\n"},
		{"without field", "", `{"error":{"code":"invalid","message":"is \"required\""}}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			WriteError(w, 422, "invalid", `is "required"`, tc.field)
			if w.Code != 422 || w.Header().Get("Content-Type") != "application/json" || w.Body.String() != tc.want {
				t.Fatalf("%d %q %q", w.Code, w.Header().Get("Content-Type"), w.Body.String())
			}
		})
	}
}

func TestRequestIDContext(t *testing.T) {
	if RequestID(t.Context()) != "" {
		t.Fatal("id without one set")
	}
	if got := RequestID(WithRequestID(t.Context(), "abc")); got != "abc" {
		t.Fatalf("got %q", got)
	}
}

// TestReturnHandler: a returned *Error is answered as it says, with its
// headers, even when wrapped; any other error is a 500 that tells the client
// nothing and is logged with its cause; no error leaves the response alone.
func TestReturnHandler(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		status   int
		body     string
		header   string
		logWants string
	}{
		{"nil", nil, 200, "ok", "", ""},
		{"http error", fmt.Errorf("wrapped: %w", &Error{Status: 412, Code: "precondition_failed", Field: "If-Match",
			Message: "stale", Header: http.Header{"Etag": {`"2"`}}}),
			412, `{"error":{"code":"precondition_failed","message":"stale","field":"If-Match"}}` + "\n", `"2"`, ""},
		{"plain error", errors.New("disk on fire"), 500,
			`{"error":{"code":"internal","message":"internal error"}}` + "\n", "", "disk on fire"},
		{"internal with cause", &Error{Status: 500, Code: "internal", Message: "the store failed", Err: errors.New("EIO")}, 500,
			`{"error":{"code":"internal","message":"the store failed"}}` + "\n", "", "EIO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			h := ReturnHandler(log, func(w http.ResponseWriter, r *http.Request) error {
				if tc.err == nil {
					_, _ = w.Write([]byte("ok"))
				}
				return tc.err
			})
			w := httptest.NewRecorder()
			h(w, httptest.NewRequest("GET", "/", nil))
			if w.Code != tc.status || w.Body.String() != tc.body || w.Header().Get("ETag") != tc.header {
				t.Fatalf("%d %q ETag %q", w.Code, w.Body.String(), w.Header().Get("ETag"))
			}
			if tc.logWants == "" && logs.Len() != 0 || !strings.Contains(logs.String(), tc.logWants) {
				t.Fatalf("log %q, want %q", logs.String(), tc.logWants)
			}
		})
	}
}
