//! A short regression run of the fuzz corpora (fuzz/corpus/*, issue 15.7): every input
//! the fuzzers keep goes through the same entry points as in `cargo fuzz`, in the
//! normal suite — the task-file parser, the node API's JSON bodies and the binlog
//! row-image decoder must answer (an error is fine) and never panic.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

#[test]
fn task_file_corpus_parses_or_explains() {
    for (path, bytes) in corpus("task_file") {
        let Ok(text) = std::str::from_utf8(&bytes) else { continue };
        if let Err(e) = ferry::config::Config::parse(Path::new("/fuzz/ferry.toml"), text) {
            let message = e.to_string();
            assert!(message.len() > 20 && message != "invalid input", "{}: a bare message: {message}", path.display());
        }
    }
}

#[test]
fn node_api_json_corpus_never_panics() {
    let mut parsed = 0;
    for (_, bytes) in corpus("node_api_json") {
        parsed += ferry::node::api::fuzz_json_inputs(&bytes);
    }
    assert!(parsed > 0, "the valid bodies of the corpus parse");
}

#[test]
fn binlog_rows_corpus_never_panics() {
    for (_, bytes) in corpus("binlog_rows") {
        let _ = ferry::connector::mysql::binlog::fuzz_row_images(&bytes);
    }
}
