//! Verification: proving both sides hold the same rows. This first part compares
//! SQLite pairs row by row in key order (a merge join over chunks), as the demo and
//! tests need; checksummed chunks, bisection and repair build on it.

pub mod compare;
