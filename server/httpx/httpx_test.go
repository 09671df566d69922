package httpx

import (
	"context"
	"net/http/httptest"
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
	if RequestID(context.Background()) != "" {
		t.Fatal("id without one set")
	}
	if got := RequestID(WithRequestID(context.Background(), "abc")); got != "abc" {
		t.Fatalf("got %q", got)
	}
}
