//! The MySQL/MariaDB binlog reader: connects as a replica, groups events into whole
//! committed transactions and decodes row events of the wanted tables into
//! [`Change`](crate::model::Change)s with full before and after images, valued as
//! `docs/mysql-types.md` says.
//!
//! The replication stream runs in a background task owned by the [`BinlogReader`]
//! (aborted when the reader is dropped) and hands decoded transactions over a bounded
//! channel, so decoding overlaps with the caller's apply. MariaDB specifics handled here:
//! GTID and GTID_LIST events (parsed by hand: the driver knows only MySQL's), resume by
//! `@slave_connect_state`, the fake first ROTATE carrying 4 CRC bytes, YEAR 0000, and
//! compressed row events (refused, never skipped). Row values are decoded by a loop over
//! cached per-table column info, straight from the event bytes.
//!
//! Each file one job, each using only those below it:
//! - `reader.rs`: the [`BinlogReader`]: connecting as a replica, the stream task and its
//!   channel, batching reads;
//! - `decoder.rs`: the event loop turning events into whole transactions (a big one in
//!   parts, so memory stays bounded);
//! - `stamps.rs`: two-way, pairing each change with its row version;
//! - `rows.rs`: rows events and their row images decoded into values and changes;
//! - `table_map.rs`: the table-map cache, each table's columns and how to read them;
//! - `filter.rs`: the [`TableFilter`], which tables the stream decodes;
//! - `gtid.rs`: MariaDB GTID states, lists and events;
//! - `wire.rs`: event bytes (a cursor over integers, the CRC trailer).

mod decoder;
mod filter;
mod gtid;
mod reader;
mod rows;
mod stamps;
mod table_map;
mod wire;

pub use filter::TableFilter;
pub use reader::{BinlogReader, Read};
pub use rows::fuzz_row_images;
