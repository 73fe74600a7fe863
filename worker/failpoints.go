//go:build !faults

package main

import "github.com/mockupaws/archiver/activities"

// installFailpoints does nothing in the released worker; the fault tests
// build it with -tags faults (failpoints_faults.go).
func installFailpoints(*activities.Activities) {}
