//go:build faults

package main

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/mockupaws/archiver/activities"
)

// installFailpoints, in the worker the fault tests build (-tags faults):
// ARCHIVER_FAULT_KILL_AFTER_EXCHANGE_STEP=N makes the process SIGKILL
// itself right after its N-th partition-exchange DDL step, so a test can
// stop the worker between any two steps.
func installFailpoints(acts *activities.Activities) {
	n, _ := strconv.Atoi(os.Getenv("ARCHIVER_FAULT_KILL_AFTER_EXCHANGE_STEP"))
	if n <= 0 {
		return
	}
	var steps atomic.Int32
	acts.AfterExchangeStep = func(step string) {
		if int(steps.Add(1)) == n {
			fmt.Fprintf(os.Stderr, "failpoint: killed after exchange step %s\n", step)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}
