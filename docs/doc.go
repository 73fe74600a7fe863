// Package docs holds the archiver's documentation (the pages beside this
// file, and the README at the repository's root) and the test that keeps
// it true: every starter command and flag its examples use exists, and
// every link, anchor and repository path it names is there.
package docs
