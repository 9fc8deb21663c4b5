//! ferry keeps two data centers' data in step: snapshot, change data capture, one-way
//! and two-way sync with deterministic conflict handling, verification and cutover.
//! See DESIGN.md in the repository's docs for the architecture.

pub mod cli;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod connector;
pub mod console;
pub mod control;
pub mod cutover;
pub mod demo;
pub mod engine;
pub mod model;
pub mod node;
pub mod store;
pub mod verify;
