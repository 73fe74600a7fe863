// Package torture is a seeded, randomized test of the archiver against the
// real PostgreSQL, Temporal and S3, in the spirit of Jepsen and SQLancer:
// from one seed it draws a database of its own (tables of the shapes real
// databases have, a policy entry for each), then a sequence of operations
// with time moving forward (archive runs, restores, application writes
// while batches move, verification) with faults injected (the worker
// SIGKILLed at its failpoints), and after every operation checks the
// database and the exported objects against a model of its own: where
// every row the application wrote and did not delete must be.
//
// The model is plain Go maps; its SQL is written for it and never calls
// the archiver's code, and it reads exported Parquet and CSV objects with
// a reader of its own (objects.go), not internal/coldstore.
//
// Generation and shrinking are pgregory.net/rapid's: a failure prints its
// seed, the schema, the policy and the shortest list of operations that
// still fails, and `make torture SEED=n` replays it. `make test` runs a
// fixed list of seeds (TestTortureSeeds), `make torture SEEDS=200` random
// ones (TestTorture).
package torture
