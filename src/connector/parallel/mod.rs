//! Parallel apply shared by the sinks that spread a one-way batch over `workers`
//! sessions: which source transactions depend on each other and how they split into
//! shares (`partition`), and the per-worker stream slots that make the split safe to
//! resume after a crash (`slots`). Each store keeps its own sessions, statements and
//! checkpoint table; the single-session path (the first commit after loading, snapshot
//! rows, schema changes, one-by-one diagnosis, two-way) stays the store's too.

pub mod partition;
pub mod slots;
