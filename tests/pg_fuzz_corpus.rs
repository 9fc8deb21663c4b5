//! The pgoutput decoder's fuzz corpus (fuzz/corpus/pgoutput_decoder, grown by
//! `cargo fuzz run pgoutput_decoder`) replayed on every test run: each input decodes to
//! a message or an error, never a panic, and the well-formed seeds decode.

use ferry::connector::postgres::decoder::{Message, decode};

#[test]
fn pg_decoder_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pgoutput_decoder");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz corpus folder") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("corpus file");
        let out = decode(&bytes);
        let name = path.file_name().and_then(|f| f.to_str()).unwrap_or_default().to_string();
        match name.as_str() {
            "relation" => assert!(matches!(out, Ok(Message::Relation(_))), "{name}: {out:?}"),
            "insert" | "update_key" | "delete_full" | "truncate" | "origin" => assert!(out.is_ok(), "{name}: {out:?}"),
            "bad_count" | "bad_len" | "empty" => assert!(out.is_err(), "{name}: {out:?}"),
            _ => {}
        }
        n += 1;
    }
    assert!(n >= 10, "the corpus holds only {n} inputs");
}

/// A short mutation run on every test run (cargo fuzz runs the long ones): bytes of the
/// corpus flipped, cut, repeated and spliced never make the decoder panic.
#[test]
fn pg_decoder_survives_mutated_corpus_inputs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pgoutput_decoder");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("fuzz corpus folder")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("corpus file"))
        .collect();
    let mut rng = fastrand::Rng::with_seed(14);
    for _ in 0..200_000 {
        let mut b = seeds[rng.usize(..seeds.len())].clone();
        for _ in 0..rng.usize(1..4) {
            match rng.u8(..4) {
                0 if !b.is_empty() => {
                    let i = rng.usize(..b.len());
                    b[i] = rng.u8(..);
                }
                1 if !b.is_empty() => b.truncate(rng.usize(..b.len())),
                2 => {
                    let other = &seeds[rng.usize(..seeds.len())];
                    b.extend_from_slice(&other[..rng.usize(..=other.len())]);
                }
                _ => b.push(rng.u8(..)),
            }
        }
        let _ = decode(&b);
    }
}
