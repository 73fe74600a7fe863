package torture

import (
	"fmt"
	"slices"
	"sort"
)

// Coverage: every branch of the generator, every operation and every
// failpoint is a key; TestTortureSeeds holds the fixed seeds to covering
// them all, so a branch added to the generator needs a seed that takes it.

// cover records that the scenario took these branches.
func (h *harness) cover(keys ...string) {
	for _, k := range keys {
		h.covered[k] = true
	}
}

// coverScenario records the branches the scenario's draw took.
func (h *harness) coverScenario() {
	if len(h.sc.settings) > 0 {
		h.cover("settings")
	}
	if len(h.sc.tables) > 1 {
		h.cover("two tables")
	}
	for _, t := range h.sc.tables {
		h.cover("kind="+t.kind, "key="+t.key, "time="+t.timeType, "partition="+t.partition, "export="+t.export, "fk="+t.fk, "schema="+t.schema)
		for _, c := range t.cols {
			h.cover("column=" + c.name)
		}
		for flag, on := range map[string]bool{"DEFAULT partition": t.defaultPart, "sub-partitioned": t.subPart,
			"exchange granted": t.ownedByRole, "delete trigger": t.trigger, "exact duplicates": t.dupes} {
			if on {
				h.cover(flag)
			}
		}
		if t.where != nil {
			h.cover(fmt.Sprintf("where=%s %s", t.where.column, t.where.op))
		}
		if t.lockBudget != "" {
			h.cover("lock budget")
		}
		h.coverDownsample(t)
		h.coverOffload(t)
	}
}

// allBranches is every key a complete set of seeds covers.
func allBranches() []string {
	out := []string{"settings", "two tables", "DEFAULT partition", "sub-partitioned", "exchange granted", "delete trigger", "exact duplicates",
		"time=timestamptz", "time=timestamp", "lock budget", "partition=month", "partition=day", "export=", "export=parquet", "export=csv",
		"fk=", "fk=CASCADE", "fk=SET NULL", "fk=RESTRICT", "schema=public", "schema=app",
		"where=status in", "where=status =", "where=status <>", "where=price <=", "where=code is not null",
		"op=archive", "op=archive with writes", "op=restore", "op=verify", "op=backfill", "op=pause", "op=restore another window"}
	for _, k := range []string{kindPlain, kindPartitioned, kindInherited} {
		out = append(out, "kind="+k)
	}
	for _, k := range []string{keyNone, keyBigint, keyIdentity, keyUUID, keyText, keyComposite} {
		out = append(out, "key="+k)
	}
	for _, c := range palette {
		out = append(out, "column="+c.name)
	}
	out = append(out, "column="+derived.name)
	for _, w := range []string{"young", "late", "update", "delete", "parent"} {
		out = append(out, "op=write "+w)
	}
	for _, f := range failpoints {
		out = append(out, "fault="+f)
	}
	out = append(out, downsampleBranches()...)
	return append(out, offloadBranches()...)
}

// merge adds a scenario's branches to the campaign's, noting those the
// seed covered first.
func (st *stats) merge(seed string, covered map[string]bool) {
	if st.covered == nil {
		st.covered, st.newBy = map[string]bool{}, map[string][]string{}
	}
	for k := range covered {
		if !st.covered[k] {
			st.covered[k] = true
			st.newBy[seed] = append(st.newBy[seed], k)
		}
	}
}

// add sums a child process's tally (its TORTURE line) into the campaign's.
func (st *stats) add(tally map[string]int) {
	st.scenarios += tally["scenarios"]
	st.ops += tally["operations"]
	st.faults += tally["faults"]
	st.rowsChecked += tally["rows_checked"]
}

// missing lists the branches no scenario took.
func (st *stats) missing() []string {
	var out []string
	for _, k := range allBranches() {
		if !st.covered[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}
