package health

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"

	"github.com/mockupaws/archiver/activities"
)

// InFlight counts the activities a worker is running, by type: a worker
// interceptor (worker.Options.Interceptors). A drain logs and reports what
// it waits for; after a timed-out drain the worker fails the attempts its
// shutdown cut short (Cut) by their task tokens, so that the server
// retries them at once.
type InFlight struct {
	interceptor.WorkerInterceptorBase

	mu      sync.Mutex
	running map[string]int
	tokens  map[uint64]Attempt
	cut     []Attempt
	seq     uint64
	total   int
	peak    int
	idle    chan struct{} // closed while total == 0
	// draining: local activities no longer start (Drain).
	draining bool
}

// Attempt is one activity attempt in flight.
type Attempt struct {
	Type      string
	TaskToken []byte
}

// NewInFlight makes an empty count.
func NewInFlight() *InFlight {
	idle := make(chan struct{})
	close(idle)
	return &InFlight{running: map[string]int{}, tokens: map[uint64]Attempt{}, idle: idle}
}

// InterceptActivity counts every activity the worker executes.
func (f *InFlight) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	i := &inFlightActivity{f: f}
	i.Next = next
	return i
}

type inFlightActivity struct {
	interceptor.ActivityInboundInterceptorBase
	f *InFlight
}

func (i *inFlightActivity) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	info := activity.GetInfo(ctx)
	if info.IsLocalActivity && i.f.isDraining() {
		// The SDK keeps a workflow task that runs local activities going
		// until the task ends, so a draining worker would start batch
		// after batch: refuse, and the workflow hands the batch to the
		// task queue (activities.ErrRunAsActivity), which ends the task.
		return nil, activities.RunAsActivity("the worker is draining: the batch goes to another worker")
	}
	id := i.f.start(Attempt{Type: info.ActivityType.Name, TaskToken: info.TaskToken})
	res, err := i.Next.ExecuteActivity(ctx, in)
	// Cut short by the worker's shutdown (its stop timeout passed): the SDK
	// cancels the context with this cause.
	i.f.end(id, err != nil && errors.Is(context.Cause(ctx), worker.ErrWorkerShutdown))
	return res, err
}

func (f *InFlight) start(r Attempt) uint64 {
	f.mu.Lock()
	f.seq++
	id := f.seq
	f.tokens[id] = r
	f.mu.Unlock()
	f.add(r.Type, 1)
	return id
}

func (f *InFlight) end(id uint64, cut bool) {
	f.mu.Lock()
	r := f.tokens[id]
	delete(f.tokens, id)
	if cut {
		f.cut = append(f.cut, r)
	}
	f.mu.Unlock()
	f.add(r.Type, -1)
}

// Attempts lists the attempts in flight.
func (f *InFlight) Attempts() []Attempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Attempt, 0, len(f.tokens))
	for _, r := range f.tokens {
		out = append(out, r)
	}
	return out
}

// Cut lists the attempts that the worker's shutdown cancelled and that
// returned an error.
func (f *InFlight) Cut() []Attempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Attempt(nil), f.cut...)
}

func (f *InFlight) add(name string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.total == 0 && n > 0 {
		f.idle = make(chan struct{})
	}
	f.running[name] += n
	if f.running[name] == 0 {
		delete(f.running, name)
	}
	f.total += n
	f.peak = max(f.peak, f.total)
	if f.total == 0 {
		close(f.idle)
	}
}

// Drain stops local activities from starting: each fails at once with
// activities.ErrRunAsActivity. Activities in flight go on.
func (f *InFlight) Drain() {
	f.mu.Lock()
	f.draining = true
	f.mu.Unlock()
}

func (f *InFlight) isDraining() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.draining
}

// Count is how many activities are running.
func (f *InFlight) Count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.total
}

// Peak is the most activities that ran at once.
func (f *InFlight) Peak() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peak
}

// Wait returns true once no activity runs, false if ctx ends first.
func (f *InFlight) Wait(ctx context.Context) bool {
	for {
		f.mu.Lock()
		idle, total := f.idle, f.total
		f.mu.Unlock()
		if total == 0 {
			return true
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return false
		}
	}
}

// String says what runs: "2 activities in flight: MoveBatch ×2".
func (f *InFlight) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.total == 0 {
		return "no activity in flight"
	}
	names := make([]string, 0, len(f.running))
	for name, n := range f.running {
		if n > 1 {
			name = fmt.Sprintf("%s ×%d", name, n)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	noun := "activities"
	if f.total == 1 {
		noun = "activity"
	}
	return fmt.Sprintf("%d %s in flight: %s", f.total, noun, strings.Join(names, ", "))
}
