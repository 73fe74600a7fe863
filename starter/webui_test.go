package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/temporalclient"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// chromiumPath is the headless browser the Web UI test drives (Debian's
// chromium package: `make chromium`). Without it the test skips, unless
// ARCHIVER_REQUIRE_STACK says every test must run.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("ARCHIVER_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	msg := "chromium not found (make chromium, or apt-get install chromium; ARCHIVER_CHROMIUM names another binary)"
	if os.Getenv("ARCHIVER_REQUIRE_STACK") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// The Web UI tells the story, checked in a real browser: an encrypted run
// started the way `starter run` starts it, with the codec server running,
// shows on its page in the dev server's Web UI the static summary (tables,
// as-of), the batches' summaries (table, window, limit) and the decoded
// input (a policy duration as "8760h", which without the codec is
// ciphertext). The UI is pointed at the codec server the way an operator
// does it in its settings: the browser's local storage.
func TestWebUIShowsTheRun(t *testing.T) {
	chromium := chromiumPath(t)
	env := testenv.Load(t)
	ctx := context.Background()
	uiURL := strings.TrimRight(os.Getenv("TEMPORAL_UI_URL"), "/")
	if uiURL == "" {
		uiURL = "http://127.0.0.1:8233"
	}

	db, dbURL := testenv.NewDB(t)
	asOf := time.Date(2026, 3, 15, 3, 0, 0, 0, time.UTC)
	testenv.InsertLogs(t, db, testenv.SpreadTimes(400, asOf, 48*time.Hour))

	key := newKey(t)
	t.Setenv(temporalclient.KeyEnv, key)
	t.Setenv(temporalclient.KeysEnv, "")
	t.Setenv(CodecTokenEnv, "") // the Web UI cannot send a fixed token
	t.Setenv("TEMPORAL_NAMESPACE", env.Namespace)
	c := encryptingClient(t, env, key)
	t.Cleanup(c.Close)
	if err := temporalclient.EnsureSearchAttributes(ctx, c, env.Namespace); err != nil {
		t.Fatal(err)
	}
	queue := testenv.StartWorker(t, c, &activities.Activities{DB: testenv.WorkerPool(t, dbURL)})

	// Started as `starter run --table logs --as-of …` starts it.
	in := workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, Policy: policy.Tables, BatchSize: 50, MinBatch: 50, MaxBatch: 50}
	so := archiveStartOptions(config.Config{TaskQueue: queue}, in, nil, time.Now())
	run, err := c.ExecuteWorkflow(ctx, so, workflows.ArchiveWorkflowName, in)
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.ArchiveResult
	if err := testenv.Wait(t, c, run, testenv.DefaultWait, &res); err != nil {
		t.Fatalf("run: %v", err)
	}
	if res.Tables[0].Batches < 2 {
		t.Fatalf("%d batches: want several on the timeline", res.Tables[0].Batches)
	}

	// `starter codec-server`, allowing the UI's origin, on a free port.
	codecURL := startCodecServer(ctx, t, []string{"--ui-origin", uiURL})

	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1600, 1300))...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancelTimeout := context.WithTimeout(bctx, 3*time.Minute)
	defer cancelTimeout()

	runPage := fmt.Sprintf("%s/namespaces/%s/workflows/%s/%s", uiURL, env.Namespace, run.GetID(), run.GetRunID())
	summary := workflows.ArchiveSummary(in)
	// A batch's summary: the timeline names an activity's ("MoveBatch •
	// logs …"); a local batch's marker carries it too, and the UI shows it
	// in the event list.
	batch := regexp.MustCompile(`logs \d{4}-\d{2}-\d{2} → (\d{4}-)?\d{2}-\d{2}, up to 50 rows`)
	// The codec endpoint as the UI's codec server settings store it (they
	// override the server's --ui-codec-endpoint, which the shared dev
	// server may have been started without).
	must(t, chromedp.Do(bctx, chromedp.Navigate(uiURL+"/namespaces/"+env.Namespace+"/workflows")))
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](fmt.Sprintf(
		`localStorage.setItem("endpoint", JSON.stringify(%q)), localStorage.setItem("overrideRemoteCodecConfiguration", "true"), true`, codecURL))); err != nil {
		t.Fatal(err)
	}

	// The history page: the decoded input, the timeline's batch summaries.
	history := browse(t, bctx, runPage+"/history", "history",
		pageText+`.includes('"ArchiveAfter": "8760h"') && `+pageText+`.includes("up to 50 rows")`)
	if !strings.Contains(history, `"ArchiveAfter": "8760h"`) || !strings.Contains(history, `"AsOf": "2026-03-15T03:00:00Z"`) {
		t.Errorf("the history page shows no decoded input (ArchiveAfter 8760h, AsOf):\n%.3000s", history)
	}
	if got := batch.FindAllString(history, -1); len(got) < 2 {
		t.Errorf("the history shows %d batch summaries like %q, want one per batch:\n%.3000s", len(got), batch, history)
	}
	if strings.Contains(history, "encrypted-aes256gcm") || strings.Contains(history, "0001-01-01") {
		t.Errorf("the history page shows ciphertext or a year-1 instant:\n%.3000s", history)
	}

	// The user metadata tab: the run's static summary and details. Both
	// are awaited: the details' Markdown renders in a frame of its own,
	// after the summary (under load, a wait for the summary alone read the
	// page before the details were drawn).
	details := "scenario_logs_archive, archive after 365 days"
	meta := browse(t, bctx, runPage+"/user-metadata", "user-metadata", fmt.Sprintf(`%s.includes(%q) && %s.includes(%q)`, pageText, summary, pageText, details))
	if !strings.Contains(meta, summary) || !strings.Contains(meta, details) {
		t.Errorf("the user metadata tab lacks the summary %q or the policy details:\n%.3000s", summary, meta)
	}
}

// pageText is the text a reader sees: the page's and that of its frames
// (the UI renders a summary's Markdown in a sandboxed frame).
const pageText = `(document.body.innerText + "\n" + [...document.querySelectorAll("iframe")].map(f => { try { return f.contentDocument.body.innerText } catch (e) { return "" } }).join("\n"))`

// browse opens url, waits until the page's condition (JavaScript) holds,
// saves a full-page screenshot (kept in the test's temp dir and, when
// ARCHIVER_SCREENSHOT_DIR is set, there too) and returns the page's text.
func browse(t *testing.T, ctx context.Context, url, name, until string) string {
	t.Helper()
	must(t, chromedp.Do(ctx, chromedp.Navigate(url)))
	_, waitErr := chromedp.Run(ctx, chromedp.Poll[bool](until, chromedp.WithPollingTimeout(time.Minute)))
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](pageText))
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatalf("screenshot of %s: %v", url, err)
	}
	dirs := []string{t.TempDir()}
	if d := os.Getenv("ARCHIVER_SCREENSHOT_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		p := filepath.Join(d, "webui-"+name+".png")
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", p)
	}
	if waitErr != nil {
		t.Fatalf("%s: waiting for %s: %v\npage text:\n%.3000s", url, until, waitErr, text)
	}
	return text
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
