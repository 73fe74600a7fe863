package testenv

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Stack runs a command of the dev stack's script, deploy/dev/stack.sh:
// restarts and outages for the fault tests, the replica for the test of
// replica-aware throttling.
func Stack(t testing.TB, cmd string) {
	t.Helper()
	// This file is internal/testenv/stack.go: the script is two folders up.
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("stack.sh: cannot locate the repository from the test binary")
	}
	script := filepath.Join(filepath.Dir(self), "..", "..", "deploy", "dev", "stack.sh")
	out, err := exec.Command("bash", script, cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("stack.sh %s: %v\n%s", cmd, err, out)
	}
	t.Logf("stack.sh %s done", cmd)
}
