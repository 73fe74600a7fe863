package health

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, h http.HandlerFunc) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	return rec.Code, rec.Body.String()
}

func TestReadyz(t *testing.T) {
	var dbErr error
	inFlight := NewInFlight()
	c := New(50*time.Millisecond, inFlight,
		Check{Name: "database", Run: func(context.Context) error { return dbErr }},
		Check{Name: "temporal", Run: func(context.Context) error { return nil }})
	expect := func(code int, lines ...string) {
		t.Helper()
		got, body := get(t, c.ServeReadyz)
		if got != code {
			t.Fatalf("status %d, want %d; body:\n%s", got, code, body)
		}
		for _, l := range lines {
			if !strings.Contains(body, l) {
				t.Fatalf("body lacks %q:\n%s", l, body)
			}
		}
	}
	expect(503, "not ready: starting\n", "worker: starting\n", "database: ok", "temporal: ok")
	c.Running()
	expect(200, "ready\n", "worker: running\n", "database: ok", "temporal: ok")

	dbErr = errors.New("dial tcp 127.0.0.1:5432: connect:\nconnection refused")
	expect(503, "not ready: database\n", "database: failed after", "connection refused", "temporal: ok")
	dbErr = nil

	inFlight.add("MoveBatch", 1)
	inFlight.add("MoveBatch", 1)
	inFlight.add("UploadReport", 1)
	c.Drain("SIGTERM")
	expect(503, "not ready: draining\n", "worker: draining since", "(SIGTERM); 3 activities in flight: MoveBatch ×2, UploadReport", "database: ok")
	c.Running() // a drain is never undone
	expect(503, "not ready: draining\n")

	if code, body := get(t, c.ServeHealthz); code != 200 || body != "ok\n" {
		t.Fatalf("healthz while draining: %d %q", code, body)
	}
}

func TestReadyzTimeout(t *testing.T) {
	c := New(20*time.Millisecond, nil, Check{Name: "temporal", Run: func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}})
	c.Running()
	code, body := get(t, c.ServeReadyz)
	if code != 503 || !strings.Contains(body, "not ready: temporal") || !strings.Contains(body, "no answer within 20ms") {
		t.Fatalf("%d:\n%s", code, body)
	}
}

func TestInFlight(t *testing.T) {
	f := NewInFlight()
	if !f.Wait(context.Background()) || f.String() != "no activity in flight" {
		t.Fatalf("empty: %s", f)
	}
	f.add("MoveBatch", 1)
	if f.String() != "1 activity in flight: MoveBatch" {
		t.Fatal(f.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if f.Wait(ctx) {
		t.Fatal("Wait returned with an activity running")
	}
	done := make(chan bool)
	go func() { done <- f.Wait(context.Background()) }()
	f.add("FinishJob", 1)
	f.add("MoveBatch", -1)
	f.add("FinishJob", -1)
	if !<-done || f.Count() != 0 || f.Peak() != 2 {
		t.Fatalf("count %d, peak %d", f.Count(), f.Peak())
	}

	a := f.start(Attempt{Type: "MoveBatch", TaskToken: []byte("a")})
	b := f.start(Attempt{Type: "UploadReport", TaskToken: []byte("b")})
	if got := f.Attempts(); len(got) != 2 || f.String() != "2 activities in flight: MoveBatch, UploadReport" {
		t.Fatalf("attempts %v: %s", got, f)
	}
	f.end(a, false)
	f.end(b, true) // cut short by the shutdown
	if cut := f.Cut(); len(cut) != 1 || string(cut[0].TaskToken) != "b" || len(f.Attempts()) != 0 || f.Count() != 0 {
		t.Fatalf("cut %v, attempts %v, count %d", cut, f.Attempts(), f.Count())
	}
}
