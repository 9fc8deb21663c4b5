//! The verify capability of item stores (Redis): one side of a comparison lists its keys
//! with a digest of each key's value in a canonical form (the same value has the same
//! digest whatever its encoding or the server's version), reads whole items for a repair
//! and writes them back. `registry::open_items` opens any item store's side.

use futures_util::future::BoxFuture;

use super::ConnectorError;
use crate::model::item::Item;

/// One key as verify compares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    /// The key.
    pub key: Vec<u8>,
    /// Its type (`string`, `hash`, …).
    pub kind: String,
    /// A 64-bit hash of its canonical value ([`super::verifier::hash_bytes`]).
    pub hash: u64,
    /// Its absolute expiry (ms since the epoch), if it has one.
    pub expire_ms: Option<i64>,
}

/// One side of an item comparison.
pub trait DynItemSide: Send {
    /// Endpoint name.
    fn name(&self) -> &str;
    /// Every key matching the patterns (ferry's own left out), with its digest, sorted by
    /// key. Keys about to expire (within 2 s) are left out on both sides alike.
    fn digests<'a>(&'a mut self, patterns: &'a [String]) -> BoxFuture<'a, Result<Vec<Digest>, ConnectorError>>;
    /// The digests of these keys (`None`: absent or about to expire).
    fn digests_of<'a>(&'a mut self, keys: &'a [Vec<u8>]) -> BoxFuture<'a, Result<Vec<Option<Digest>>, ConnectorError>>;
    /// How many keys match the patterns, and up to `sample` of them.
    fn count<'a>(
        &'a mut self,
        patterns: &'a [String],
        sample: usize,
    ) -> BoxFuture<'a, Result<(u64, Vec<Vec<u8>>), ConnectorError>>;
    /// Whole items, for a repair (`None`: absent).
    fn read<'a>(&'a mut self, keys: &'a [Vec<u8>]) -> BoxFuture<'a, Result<Vec<Option<Item>>, ConnectorError>>;
    /// Writes items read from the other side (`None`: deletes the key).
    fn write<'a>(&'a mut self, items: &'a [(Vec<u8>, Option<Item>)]) -> BoxFuture<'a, Result<(), ConnectorError>>;
}
