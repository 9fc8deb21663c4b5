//! Integration tests: one binary (links once), modules by behaviour. Every test runs
//! against real SQLite files and, where it says so, the real `ferry` binary.

mod support;

mod bad_input;
mod console_e2e;
mod convergence;
mod crash;
mod cutover_mysql;
mod cutover_node;
mod cutover_refusals;
mod cutover_sqlite;
mod lease;
mod mixed_engines;
mod mysql_check;
mod mysql_ddl;
mod mysql_freeze;
mod mysql_oneway;
mod mysql_parallel;
mod mysql_twoway;
mod node_api;
mod skip;
mod sqlite_connector;
mod verify_bad_input;
mod verify_live;
mod verify_mutation;
mod verify_options;
