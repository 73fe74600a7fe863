package torture

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/mockupaws/archiver/internal/testenv"
)

// fixedSeeds run in `make test`: together they cover every branch of the
// generator (each shape, key, column, fault and operation), and every
// failure a campaign finds joins them, beside its fix.
var fixedSeeds = []uint64{
	// A weighted cover of the branches the 246-seed campaign from 20000
	// took (make torture TORTURE_COVER=1), the fastest seeds first.
	20012, 20013, 20019, 20027, 20031, 20053, 20074, 20079, 20098,
	20106, 20122, 20166, 20169, 20172, 20187, 20240, 20244,
	// Whether a failpoint is reached depends on how many batches a run
	// makes, which the application's writes during it change: a second
	// seed for each of the rarer ones (20013 missed the restore batch
	// once under make test's load).
	20239, 20153, 20014, 20174,
}

func TestMain(m *testing.M) {
	flag.Parse()
	// A scenario's operations each take a second or more on the real
	// servers: a handful per scenario, unless -rapid.steps says otherwise.
	if !flagSet("rapid.steps") && os.Getenv("RAPID_STEPS") == "" {
		_ = flag.Set("rapid.steps", "6")
	}
	os.Exit(m.Run())
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// TestTortureSeeds runs the fixed seeds.
//
// The seeds run in TORTURE_SHARDS child processes of this test binary (2
// unless set; 1 runs them here), each a share of the seeds, so that they
// are not the last package left running in make test. Processes, not
// goroutines: rapid takes its seed from a process-wide flag. Each child
// prints the branches each seed took, and this test checks their union.
func TestTortureSeeds(t *testing.T) {
	t.Parallel()
	if shard := os.Getenv("TORTURE_SHARD"); shard != "" {
		i, n := parseShard(t, shard)
		s := newSuite(t)
		for k, seed := range fixedSeeds {
			if k%n == i {
				s.run(t, seed)
			}
		}
		return
	}
	shards := int(envUint(t, "TORTURE_SHARDS", 2))
	if shards <= 1 {
		s := newSuite(t)
		for _, seed := range fixedSeeds {
			s.run(t, seed)
		}
		s.checkCovered(t)
		return
	}
	testenv.Load(t) // skips, or fails under ARCHIVER_REQUIRE_STACK, without the stack
	bin := testenv.WorkerBinary(t)
	s := &suite{t: t, stats: &stats{}}
	began := time.Now()
	outs := make([]shardResult, shards)
	var wg sync.WaitGroup
	for i := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = runShard(t, i, shards, bin)
		}()
	}
	wg.Wait()
	for i, r := range outs {
		for _, c := range r.covered {
			s.stats.seeds++
			s.stats.merge(c.seed, c.branches)
		}
		s.stats.add(r.tally)
		if r.err != nil {
			s.stats.failed = append(s.stats.failed, fmt.Sprintf("shard %d/%d", i, shards))
			t.Errorf("shard %d/%d of the fixed seeds failed (%v); its output:\n%s", i, shards, r.err, r.out)
		}
	}
	s.summary(time.Since(began))
	s.checkCovered(t)
}

func (s *suite) checkCovered(t *testing.T) {
	if m := s.stats.missing(); len(m) > 0 && !t.Failed() {
		t.Errorf("the fixed seeds leave branches of the generator untried: %v; add seeds that take them (make torture SEEDS=n prints which seeds cover what)", m)
	}
}

func parseShard(t *testing.T, v string) (i, n int) {
	if _, err := fmt.Sscanf(v, "%d/%d", &i, &n); err != nil || n < 1 || i < 0 || i >= n {
		t.Fatalf("TORTURE_SHARD=%q: want i/n with 0 <= i < n", v)
	}
	return i, n
}

type shardResult struct {
	covered []seedCover
	tally   map[string]int // the child's TORTURE line: operations, faults, rows_checked
	out     string
	err     error
}

type seedCover struct {
	seed     string
	branches map[string]bool
}

var (
	coveredLine = regexp.MustCompile(`seed (\d+) took \S+ and covered: (.*)$`)
	tortureLine = regexp.MustCompile(`TORTURE seeds=.*`)
	tallyField  = regexp.MustCompile(`(\w+)=(\d+)`)
)

// runShard runs this test binary again for shard i of n and reads what
// each of its seeds covered.
func runShard(t *testing.T, i, n int, workerBin string) shardResult {
	args := []string{"-test.run=^TestTortureSeeds$", "-test.v=true", "-test.count=1"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(d).Round(time.Second).String())
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("TORTURE_SHARD=%d/%d", i, n), "TORTURE_COVER=1",
		testenv.WorkerBinaryEnv+"="+workerBin)
	out, err := cmd.CombinedOutput()
	r := shardResult{out: string(out), err: err, tally: map[string]int{}}
	for _, l := range strings.Split(r.out, "\n") {
		if m := coveredLine.FindStringSubmatch(l); m != nil {
			c := seedCover{seed: m[1], branches: map[string]bool{}}
			for _, b := range strings.Split(m[2], "|") {
				c.branches[b] = true
			}
			r.covered = append(r.covered, c)
		}
		if m := tortureLine.FindString(l); m != "" {
			for _, f := range tallyField.FindAllStringSubmatch(m, -1) {
				v, _ := strconv.Atoi(f[2])
				r.tally[f[1]] += v
			}
		}
	}
	if err == nil && len(r.covered) == 0 {
		r.err = fmt.Errorf("the child ran no seed")
	}
	return r
}

// TestTorture runs TORTURE_SEEDS random seeds from TORTURE_START (the
// clock when unset), or the one TORTURE_SEED: `make torture`. With
// TORTURE_STOP set, the first failing seed ends it (how many seeds a
// defect takes to find); with TORTURE_COVER set, each seed's line lists
// every branch it took (to choose fixedSeeds by).
func TestTorture(t *testing.T) {
	var seeds, start uint64
	switch {
	case os.Getenv("TORTURE_SEED") != "":
		start, seeds = envUint(t, "TORTURE_SEED", 0), 1
	case os.Getenv("TORTURE_SEEDS") != "":
		seeds = envUint(t, "TORTURE_SEEDS", 0)
		start = envUint(t, "TORTURE_START", uint64(time.Now().UnixNano()%1_000_000_000))
	default:
		t.Skip("random seeds: make torture SEEDS=n [START=n] (or SEED=n to replay one)")
	}
	s := newSuite(t)
	stop := os.Getenv("TORTURE_STOP") != ""
	for i := range seeds {
		if !s.run(t, start+i) && stop {
			return // TORTURE_STOP: the first failing seed ends the campaign
		}
	}
}

func envUint(t *testing.T, name string, def uint64) uint64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: want a whole number", name, v)
	}
	return n
}

func newSuite(t *testing.T) *suite {
	s := &suite{t: t, env: testenv.Load(t), stats: &stats{}}
	s.c = testenv.Temporal(t)
	s.store = testenv.Store(t)
	began := time.Now()
	t.Cleanup(func() { s.summary(time.Since(began)) })
	return s
}

// run runs one seed's scenario as its own subtest: rapid draws it from
// the seed, and shrinks a failure to the shortest list of operations that
// still fails (printed with the schema and the policy).
func (s *suite) run(t *testing.T, seed uint64) bool {
	began := time.Now()
	_ = flag.Set("rapid.seed", strconv.FormatUint(seed, 10))
	_ = flag.Set("rapid.checks", "1")
	s.stats.seeds++
	var covered map[string]bool
	ok := t.Run(fmt.Sprintf("seed=%d", seed), rapid.MakeCheck(func(rt *rapid.T) {
		s.stats.scenarios++
		id := testenv.RandomID()
		sc := drawScenario(rt, id)
		h := newHarness(rt, s, sc, id)
		covered = h.covered
		h.archive(rt) // every scenario archives at least once
		h.check(rt)
		rt.Repeat(h.actions())
	}))
	if !ok {
		s.stats.failed = append(s.stats.failed, strconv.FormatUint(seed, 10))
		return false
	}
	if os.Getenv("TORTURE_COVER") != "" {
		// Every branch the seed took, to pick fixed seeds by.
		var keys []string
		for k := range covered {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Logf("seed %d took %s and covered: %s", seed, time.Since(began).Round(time.Second), strings.Join(keys, "|"))
	}
	s.stats.merge(strconv.FormatUint(seed, 10), covered)
	return true
}

// summary prints the campaign's table.
func (s *suite) summary(took time.Duration) {
	st := s.stats
	failed := "none"
	if len(st.failed) > 0 {
		failed = "seeds " + strings.Join(st.failed, ", ") + " (make torture SEED=n replays one)"
	}
	s.t.Logf("TORTURE seeds=%d scenarios=%d operations=%d faults=%d rows_checked=%d failures=%d took=%s: %s",
		st.seeds, st.scenarios, st.ops, st.faults, st.rowsChecked, len(st.failed), took.Round(time.Second), failed)
	var firsts []string
	for seed, keys := range st.newBy {
		sort.Strings(keys)
		firsts = append(firsts, fmt.Sprintf("  seed %s first covered: %s", seed, strings.Join(keys, ", ")))
	}
	sort.Strings(firsts)
	s.t.Logf("coverage: %d of %d branches; not covered: %v\n%s", len(allBranches())-len(st.missing()), len(allBranches()), st.missing(), strings.Join(firsts, "\n"))
}
