package main

import (
	"fmt"
	"runtime/debug"

	"github.com/mockupaws/archiver/internal/config"
)

// buildID is the binary's build id, set at link time:
//
//	go build -ldflags "-X main.buildID=v1.4.2" ./worker
//
// The Dockerfile passes its VERSION build argument (the image's tag).
var buildID string

// workerBuildID is the build id the worker announces as its Worker
// Deployment Version: ARCHIVE_WORKER_BUILD_ID, else the link-time buildID,
// else the commit go build stamped into the binary (with "-dirty" when the
// tree had changes). "" when none is known, which only matters (and is
// refused) when ARCHIVE_WORKER_DEPLOYMENT turns versioning on.
func workerBuildID(cfg config.Config) (string, error) {
	id, from := cfg.WorkerBuildID, "ARCHIVE_WORKER_BUILD_ID"
	if id == "" {
		id, from = buildID, "the binary's -X main.buildID"
	}
	if id == "" {
		id, from = vcsRevision(), "the binary's vcs.revision"
	}
	if id == "" {
		if cfg.WorkerDeployment != "" {
			return "", fmt.Errorf("ARCHIVE_WORKER_DEPLOYMENT=%s turns Worker Versioning on, but this worker has no build id: "+
				"set ARCHIVE_WORKER_BUILD_ID, or build with -ldflags \"-X main.buildID=VERSION\" (the Dockerfile's VERSION build argument) or from a git checkout", cfg.WorkerDeployment)
		}
		return "", nil
	}
	if err := config.CheckBuildID(id); err != nil {
		return "", fmt.Errorf("%s: %w", from, err)
	}
	return id, nil
}

// vcsRevision is the commit the binary was built from, as go build
// records it (not with -buildvcs=false, nor outside a checkout).
func vcsRevision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}
