package workflows

import "github.com/mockupaws/archiver/activities"

// a is the bridge to the activities: a nil *Activities whose methods name the
// activities for workflow.ExecuteActivity, so no activity name is a string.
var a *activities.Activities
