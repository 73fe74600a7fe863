package config

import (
	"fmt"
	"regexp"
)

// Worker Versioning (docs/deploying.md). Both names end up
// in the server's deployment records, the CLI's flags and the Web UI: they
// are kept to characters that need no quoting anywhere. A deployment name
// may not hold "." or ":", which the server uses to join a deployment name
// and a build id into one version string; a build id may (v1.4.2).
var (
	deploymentNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$`)
	buildIDRE        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$`)
)

// workerDeployment reads ARCHIVE_WORKER_DEPLOYMENT and
// ARCHIVE_WORKER_BUILD_ID. Versioning is on only when the deployment is
// named: a worker of a deployment gets no task until an operator makes its
// version current, which a dev stack or a first run never does.
func (c *Config) workerDeployment(get func(name, def string) string) error {
	c.WorkerDeployment = get("ARCHIVE_WORKER_DEPLOYMENT", "")
	c.WorkerBuildID = get("ARCHIVE_WORKER_BUILD_ID", "")
	if c.WorkerDeployment != "" && !deploymentNameRE.MatchString(c.WorkerDeployment) {
		return fmt.Errorf("ARCHIVE_WORKER_DEPLOYMENT=%q: want a name of letters, digits, - and _ (at most 200; no . or :), such as archiver", c.WorkerDeployment)
	}
	if c.WorkerBuildID != "" && !buildIDRE.MatchString(c.WorkerBuildID) {
		return fmt.Errorf("ARCHIVE_WORKER_BUILD_ID=%q: want a build id of letters, digits, ., +, - and _ (at most 200), such as a git commit or an image tag", c.WorkerBuildID)
	}
	return nil
}

// CheckBuildID validates a build id that did not come from the
// environment (the binary's own), with the same rule.
func CheckBuildID(id string) error {
	if !buildIDRE.MatchString(id) {
		return fmt.Errorf("build id %q: want letters, digits, ., +, - and _ (at most 200)", id)
	}
	return nil
}
