// Package faults holds the tests that break things on purpose: the worker
// process is SIGKILLed mid-run, PostgreSQL and the Temporal dev server are
// restarted, the S3 server is stopped and started, and a second process
// writes and reads the live tables while a run archives. After each, every
// row must be in exactly one place with its content (checksums), every
// ledger batch must count the rows carrying its id, and every archived
// report must restore its original bytes.
//
// Build tag "faults". `make test` runs the short version (fewer rows, one
// kill, only workers of their own killed) with the other packages; `make
// test-faults` the long ones (FAULTS_LONG=1), which restart the shared dev
// servers and so run on their own.
package faults
