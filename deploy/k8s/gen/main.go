// Command gen writes deploy/k8s's generated manifests (the PrometheusRule and
// the Grafana dashboard ConfigMap) from their sources. Run it as
// `go generate ./deploy/k8s` (from anywhere in the repository).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/mockupaws/archiver/deploy/k8s"
)

func main() {
	root, err := repoRoot()
	if err == nil {
		err = write(root)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func write(root string) error {
	files, err := k8s.Generate(root)
	if err != nil {
		return err
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if err := os.WriteFile(filepath.Join(root, p), files[p], 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", p)
	}
	return nil
}

// repoRoot is the nearest directory above the working directory that holds
// go.mod (go generate runs in deploy/k8s).
func repoRoot() (string, error) {
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
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
