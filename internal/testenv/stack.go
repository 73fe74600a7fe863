package testenv

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Stack runs a command of the dev stack's script, deploy/dev/stack.sh:
// restarts and outages for the fault tests, the replica for the test of
// replica-aware throttling.
func Stack(t testing.TB, cmd string) {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", filepath.Join(root, "deploy", "dev", "stack.sh"), cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("stack.sh %s: %v\n%s", cmd, err, out)
	}
	t.Logf("stack.sh %s done", cmd)
}

// moduleRoot is the folder of go.mod, found upward from the test's working
// directory (its package's folder).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's working directory")
		}
		dir = parent
	}
}
