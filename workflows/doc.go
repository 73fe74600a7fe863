// Package workflows orchestrates archive runs. It holds no SQL and no I/O:
// every effect is an activity of package activities, called through the
// typed nil reference in activities.go. Everything here must replay
// deterministically; time comes from the workflow's own clock and ids are
// derived from the run.
package workflows
