// Package activities does the archiver's I/O: every SQL statement the
// workflow needs runs here, one activity per step of a run
// (docs/design.md, "The shape of a run"). Activities are methods on
// Activities so that they share the connection pool; the workflow calls
// them through a typed nil *Activities.
//
// Payloads carry ids, cut-offs, counts and bytes only, never row content.
package activities
