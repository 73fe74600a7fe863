// Package health serves the worker's /healthz and /readyz beside /metrics
// (docs/deploying.md, "Health, draining and slots"), and counts the
// activities the worker is running, so that a drain can say what it waits
// for.
//
//   - /healthz answers 200 while the process serves HTTP: a liveness probe
//     restarts only a hung process, never a draining one.
//   - /readyz answers 200 when the worker polls its task queue, the
//     database answers a ping and the Temporal frontend its health check;
//     503 otherwise, and from the first SIGTERM on (draining). Its body
//     has one line per check, saying which failed and why.
package health

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Check is one dependency of readiness.
type Check struct {
	Name string
	Run  func(context.Context) error
}

// Worker states as /readyz reports them.
const (
	Starting = "starting"
	Running  = "running"
	Draining = "draining"
)

// DefaultTimeout bounds each check of a /readyz request (a probe's own
// timeoutSeconds should exceed it).
const DefaultTimeout = 2 * time.Second

// Checker answers /healthz and /readyz.
type Checker struct {
	checks   []Check
	timeout  time.Duration
	inFlight *InFlight

	mu     sync.Mutex
	state  string
	since  time.Time
	reason string
}

// New makes a checker, in state Starting, of checks (each bounded by
// timeout; 0: DefaultTimeout). inFlight, when not nil, is reported while
// draining.
func New(timeout time.Duration, inFlight *InFlight, checks ...Check) *Checker {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Checker{checks: checks, timeout: timeout, inFlight: inFlight, state: Starting, since: time.Now()}
}

// Running marks the worker as polling its task queue.
func (c *Checker) Running() { c.set(Running, "") }

// Drain marks the worker as draining (for reason, e.g. "SIGTERM"): /readyz
// answers 503 from now on.
func (c *Checker) Drain(reason string) { c.set(Draining, reason) }

// State is the worker's state and since when.
func (c *Checker) State() (string, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.since
}

func (c *Checker) set(state, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == Draining { // a drain is never undone
		return
	}
	c.state, c.since, c.reason = state, time.Now(), reason
}

// Register serves /healthz and /readyz on mux.
func (c *Checker) Register(mux *http.ServeMux) {
	mux.HandleFunc("/healthz", c.ServeHealthz)
	mux.HandleFunc("/readyz", c.ServeReadyz)
}

// ServeHealthz answers 200 "ok": the process is alive.
func (c *Checker) ServeHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintln(w, "ok")
}

// Report is one /readyz answer.
type Report struct {
	Ready bool
	// Failed names what is not ready: "worker" (starting or draining) and
	// the checks that failed, in order.
	Failed []string
	Lines  []string
}

// Status is the HTTP status of the report.
func (r Report) Status() int {
	if r.Ready {
		return http.StatusOK
	}
	return http.StatusServiceUnavailable
}

func (r Report) String() string {
	head := "ready"
	if !r.Ready {
		head = "not ready: " + strings.Join(r.Failed, ", ")
	}
	return head + "\n" + strings.Join(r.Lines, "\n") + "\n"
}

// Ready runs every check at once, each under the checker's timeout.
func (c *Checker) Ready(ctx context.Context) Report {
	var r Report
	state, since := c.State()
	c.mu.Lock()
	reason := c.reason
	c.mu.Unlock()
	worker := "worker: " + state
	switch state {
	case Draining:
		worker += fmt.Sprintf(" since %s", time.Since(since).Round(time.Millisecond))
		if reason != "" {
			worker += " (" + reason + ")"
		}
		if c.inFlight != nil {
			worker += "; " + c.inFlight.String()
		}
		r.Failed = append(r.Failed, "draining")
	case Starting:
		r.Failed = append(r.Failed, "starting")
	}
	r.Lines = append(r.Lines, worker)

	results := make([]string, len(c.checks))
	failed := make([]bool, len(c.checks))
	var wg sync.WaitGroup
	for i, ch := range c.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			began := time.Now()
			err := ch.Run(cctx)
			took := ms(time.Since(began))
			if err != nil {
				if cctx.Err() != nil && ctx.Err() == nil {
					err = fmt.Errorf("no answer within %s: %w", c.timeout, err)
				}
				results[i], failed[i] = fmt.Sprintf("%s: failed after %s: %s", ch.Name, took, oneLine(err.Error())), true
				return
			}
			results[i] = fmt.Sprintf("%s: ok (%s)", ch.Name, took)
		}()
	}
	wg.Wait()
	for i, ch := range c.checks {
		if failed[i] {
			r.Failed = append(r.Failed, ch.Name)
		}
	}
	r.Lines = append(r.Lines, results...)
	r.Ready = len(r.Failed) == 0
	return r
}

// ServeReadyz answers 200 when ready, 503 otherwise, with the report.
func (c *Checker) ServeReadyz(w http.ResponseWriter, req *http.Request) {
	r := c.Ready(req.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(r.Status())
	fmt.Fprint(w, r.String())
}

// ms formats d in milliseconds, to a tenth: "0.4 ms".
func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
