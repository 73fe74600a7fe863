package main

import (
	"strings"
	"testing"

	"github.com/mockupaws/archiver/internal/config"
)

// The build id's sources in order: ARCHIVE_WORKER_BUILD_ID, the link-time
// main.buildID, the commit go build stamped (none in a test binary).
func TestWorkerBuildID(t *testing.T) {
	defer func(old string) { buildID = old }(buildID)
	buildID = ""
	if id, err := workerBuildID(config.Config{}); err != nil || id != "" {
		t.Fatalf("unversioned, no build id: %q, %v; want none and no error", id, err)
	}
	_, err := workerBuildID(config.Config{WorkerDeployment: "archiver"})
	if err == nil || !strings.Contains(err.Error(), "ARCHIVE_WORKER_BUILD_ID") || !strings.Contains(err.Error(), "main.buildID") {
		t.Fatalf("versioning on without a build id: %v; want a refusal naming ARCHIVE_WORKER_BUILD_ID and -X main.buildID", err)
	}
	buildID = "v1.4.2"
	if id, err := workerBuildID(config.Config{WorkerDeployment: "archiver"}); err != nil || id != "v1.4.2" {
		t.Fatalf("the link-time build id: %q, %v", id, err)
	}
	if id, err := workerBuildID(config.Config{WorkerDeployment: "archiver", WorkerBuildID: "hotfix-7"}); err != nil || id != "hotfix-7" {
		t.Fatalf("ARCHIVE_WORKER_BUILD_ID overrides: %q, %v", id, err)
	}
	buildID = "bad id"
	if _, err := workerBuildID(config.Config{}); err == nil || !strings.Contains(err.Error(), "main.buildID") {
		t.Fatalf("an invalid link-time build id: %v", err)
	}
}
