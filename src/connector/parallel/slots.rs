//! The stream slots of a target applying over several sessions: each session commits
//! its share of a batch with its own slot (`stream:W`) in the checkpoint table, holding
//! the batch's end position and the end positions of the source transactions it
//! committed. All sessions commit before the next batch starts, so after a crash every
//! slot holds either this batch's end or the previous one: the stream resumes from the
//! lowest, and the transactions listed by slots past it are not applied again (MySQL's
//! multi-threaded replica keeps the same kind of list per worker). Replaying them would
//! not be idempotent: their upserts could meet unique values that later changes of the
//! same group already moved. The rows' storage is the store's; what they mean is here.

use std::collections::HashMap;

use crate::connector::{ApplyBatch, Checkpoint, ConnectorError, TableProgress};
use crate::model::Position;

/// What the stream slots of a direction say beyond the lowest position: how many there
/// are, and which source transactions past the lowest a worker already committed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamSlots {
    /// Stream slot rows found (`stream:0` … `stream:N-1`; more than `workers` after a
    /// change of `workers`).
    pub count: usize,
    /// Source transactions (their end positions) past the lowest slot's position that a
    /// worker committed before a crash: a resumed stream must not apply them again.
    pub applied: Vec<Position>,
}

/// A source transaction's identity in its stream, as the store tells it (a re-read of
/// the same stream gives the same identity).
pub type StreamKey = fn(&Position) -> String;

/// The stream slots of a sink: whether they agree, and what a crash left applied.
#[derive(Debug)]
pub struct StreamState {
    /// Every worker's slot holds the same position and no other slot exists; false
    /// after loading until the first single-session commit writes them all.
    pub settled: bool,
    /// Source transactions past the lowest slot that a worker already committed, by
    /// their stream key.
    applied: HashMap<String, Position>,
    /// How the store names a transaction in `applied`.
    key: StreamKey,
}

impl Default for StreamState {
    fn default() -> Self {
        StreamState { settled: false, applied: HashMap::new(), key: |p| p.to_string() }
    }
}

impl StreamState {
    /// The state a checkpoint was loaded with.
    pub fn loaded(slots: StreamSlots, key: StreamKey) -> Self {
        let applied = slots.applied.into_iter().map(|p| (key(&p), p)).collect();
        StreamState { settled: false, applied, key }
    }

    /// Whether a worker committed this transaction before a crash.
    pub fn is_applied(&self, p: &Position) -> bool {
        // Asked for every transaction of every batch; the list is empty but after a crash.
        !self.applied.is_empty() && self.applied.contains_key(&(self.key)(p))
    }

    /// Whether no transaction is listed as already applied.
    pub fn nothing_applied(&self) -> bool {
        self.applied.is_empty()
    }

    /// How many transactions are listed as already applied.
    pub fn applied_count(&self) -> usize {
        self.applied.len()
    }

    /// Notes a transaction one session committed while another session of its batch
    /// failed: the batch's retry must leave it out.
    pub fn note_applied(&mut self, p: &Position) {
        self.applied.insert((self.key)(p), p.clone());
    }

    /// Every slot was written at `position` in one committed transaction.
    pub fn committed(&mut self, position: Option<&Position>) {
        self.settled = true;
        self.applied.retain(|_, p| position.is_none_or(|end| is_after(p, end)));
    }

    /// The slots a single session writes at `position`: every worker's, with slot 0
    /// listing what is still applied past it.
    pub fn all_slots(&self, workers: usize, position: Option<&Position>) -> Vec<(usize, Option<String>)> {
        let still: Vec<&Position> =
            self.applied.values().filter(|p| position.is_none_or(|end| is_after(p, end))).collect();
        (0..workers.max(1)).map(|w| (w, if w == 0 { slot_progress(&still) } else { None })).collect()
    }
}

/// Whether a batch must take the single-session path: one worker, two-way, one-by-one
/// diagnosis, snapshot rows, schema changes, fewer than two transactions, or slots not
/// yet settled since loading (or still listing transactions a crash left applied).
pub fn stays_single(batch: &ApplyBatch, workers: usize, stream: &StreamState) -> bool {
    workers < 2
        || batch.conflicts.is_some()
        || batch.one_by_one
        || batch.snapshot.is_some()
        || batch.txns.len() < 2
        || !stream.settled
        || !stream.nothing_applied()
        || batch.txns.iter().any(|t| !t.ddl.is_empty())
}

/// A stream slot's extra state, kept in its `progress` column as JSON.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct SlotProgress {
    /// End positions of the source transactions this worker committed in its last batch.
    #[serde(default)]
    applied: Vec<String>,
}

/// The stream slot name of worker `w`.
pub fn stream_slot(w: usize) -> String {
    format!("stream:{w}")
}

/// The worker index of a stream slot's name.
pub fn slot_worker(slot: &str) -> Option<usize> {
    slot.strip_prefix("stream:").and_then(|w| w.parse().ok())
}

/// The `progress` text of a stream slot naming the transactions its worker committed.
pub fn slot_progress(applied: &[&Position]) -> Option<String> {
    if applied.is_empty() {
        return None;
    }
    serde_json::to_string(&SlotProgress { applied: applied.iter().map(ToString::to_string).collect() }).ok()
}

/// One session's share of a parallel batch: its transactions (indexes into the batch, in
/// source order) and the stream slots its transaction writes (its own first).
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// The batch's transactions this session applies.
    pub txns: Vec<usize>,
    /// Worker slots it writes: its own, then those of workers without a share.
    pub slots: Vec<usize>,
}

impl Share {
    /// The slots this share's transaction writes: its own listing the end positions of
    /// the transactions it commits, the idle workers' at the batch's end only.
    pub fn streams(&self, positions: &[&Position]) -> Vec<(usize, Option<String>)> {
        let mine = slot_progress(positions);
        self.slots.iter().enumerate().map(|(i, &w)| (w, if i == 0 { mine.clone() } else { None })).collect()
    }
}

/// The sessions' shares of a batch split by [`super::partition::partition`]: a worker
/// without transactions has nothing of its own to commit, so the first session moves
/// its slot along with its own. Fewer than two shares: the batch does not split.
pub fn shares_of(split: Vec<Vec<usize>>) -> Option<Vec<Share>> {
    let mut shares: Vec<Share> = Vec::new();
    let mut idle: Vec<usize> = Vec::new();
    for (w, txns) in split.into_iter().enumerate() {
        if txns.is_empty() {
            idle.push(w);
        } else {
            shares.push(Share { txns, slots: vec![w] });
        }
    }
    if shares.len() < 2 {
        return None;
    }
    shares[0].slots.extend(idle);
    Some(shares)
}

/// Reads a direction's checkpoint rows (slot, position, progress) into the checkpoint and
/// its stream slots: the stream resumes from the lowest slot's position, and the
/// transactions past it that a worker already committed come back in
/// [`StreamSlots::applied`]. `parse` reads a position's text; `corrupt` makes the error
/// for a slot that cannot be read.
pub fn read_slots(
    rows: Vec<(String, Option<String>, Option<String>)>,
    parse: impl Fn(&str) -> Result<Position, String>,
    corrupt: impl Fn(&str, String) -> ConnectorError,
) -> Result<(Checkpoint, StreamSlots), ConnectorError> {
    let mut cp = Checkpoint::default();
    // Per stream slot: its position (None: before the first batch) and what it applied.
    let mut streams: Vec<(Option<Position>, Vec<Position>)> = Vec::new();
    for (slot, position, progress) in rows {
        if slot.starts_with("stream:") {
            let position = position.map(|p| parse(&p)).transpose().map_err(|e| corrupt(&slot, e))?;
            let extra: SlotProgress = match progress {
                Some(p) => serde_json::from_str(&p).map_err(|e| corrupt(&slot, e.to_string()))?,
                None => SlotProgress::default(),
            };
            let applied =
                extra.applied.iter().map(|p| parse(p).map_err(|e| corrupt(&slot, e))).collect::<Result<Vec<_>, _>>()?;
            streams.push((position, applied));
        } else if let (Some(table), Some(p)) = (slot.strip_prefix("table:"), progress) {
            let prog: TableProgress = serde_json::from_str(&p).map_err(|e| corrupt(&slot, e.to_string()))?;
            cp.tables.insert(table.to_string(), prog);
        }
    }
    let mut lowest: Option<Option<Position>> = None;
    for (p, _) in &streams {
        lowest = Some(match (lowest, p) {
            (None, p) => p.clone(),
            (Some(None), _) | (Some(Some(_)), None) => None,
            (Some(Some(l)), Some(p)) => Some(if is_after(&l, p) { p.clone() } else { l }),
        });
    }
    cp.position = lowest.flatten();
    let mut applied: Vec<Position> = Vec::new();
    for (_, list) in &streams {
        for p in list {
            let past = cp.position.as_ref().is_none_or(|low| is_after(p, low));
            if past && !applied.contains(p) {
                applied.push(p.clone());
            }
        }
    }
    Ok((cp, StreamSlots { count: streams.len(), applied }))
}

/// True when `a` lies after `b` in the stream.
pub fn is_after(a: &Position, b: &Position) -> bool {
    a.stream_cmp(b) == Some(std::cmp::Ordering::Greater)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: u64) -> Position {
        Position::new(format!("t:{n}"), n.to_be_bytes().to_vec(), None)
    }

    fn parse(text: &str) -> Result<Position, String> {
        text.strip_prefix("t:").and_then(|n| n.parse().ok()).map(at).ok_or_else(|| format!("bad {text}"))
    }

    fn corrupt(slot: &str, e: String) -> ConnectorError {
        ConnectorError::Setup { endpoint: "t".into(), problem: format!("{slot}: {e}"), fix: String::new() }
    }

    #[test]
    fn the_stream_resumes_from_the_lowest_slot_and_lists_what_is_past_it() {
        let rows = vec![
            ("stream:0".to_string(), Some("t:70".to_string()), slot_progress(&[&at(61), &at(63)])),
            ("stream:1".to_string(), Some("t:60".to_string()), slot_progress(&[&at(50)])),
            ("table:s.t".to_string(), None, Some(r#"{"state":"done"}"#.to_string())),
        ];
        let (cp, slots) = read_slots(rows, parse, corrupt).expect("readable");
        assert_eq!(cp.position, Some(at(60)));
        assert_eq!(slots, StreamSlots { count: 2, applied: vec![at(61), at(63)] });
        let mut state = StreamState::loaded(slots, |p| p.to_string());
        assert!(state.is_applied(&at(61)) && !state.is_applied(&at(62)));
        assert_eq!(state.all_slots(2, Some(&at(62)))[0].1, slot_progress(&[&at(63)]));
        state.committed(Some(&at(70)));
        assert!(state.settled && state.nothing_applied());
    }

    #[test]
    fn a_slot_before_the_first_batch_holds_the_stream_at_its_start() {
        let rows = vec![("stream:0".to_string(), Some("t:9".to_string()), None), ("stream:1".to_string(), None, None)];
        let (cp, slots) = read_slots(rows, parse, corrupt).expect("readable");
        assert_eq!((cp.position, slots.count), (None, 2));
        let bad = vec![("stream:0".to_string(), Some("x".to_string()), None)];
        assert!(read_slots(bad, parse, corrupt).is_err());
    }

    #[test]
    fn idle_workers_move_their_slots_with_the_first_share() {
        assert_eq!(shares_of(vec![vec![0, 1], vec![]]), None, "one share does not split");
        let shares = shares_of(vec![vec![], vec![0, 2], vec![1], vec![]]).expect("two shares");
        assert_eq!(
            shares,
            vec![Share { txns: vec![0, 2], slots: vec![1, 0, 3] }, Share { txns: vec![1], slots: vec![2] }]
        );
        let streams = shares[0].streams(&[&at(1), &at(3)]);
        assert_eq!(streams, vec![(1, slot_progress(&[&at(1), &at(3)])), (0, None), (3, None)]);
    }
}
