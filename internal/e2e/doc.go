// Package e2e runs whole archive runs through the real Temporal dev server,
// a real worker and a real PostgreSQL database, and checks the exactly-once
// promise (docs/design.md) on the data itself: every eligible row archived
// with the same content, none in both tables, none lost, reruns change
// nothing.
package e2e
