//! Replays every file of the fuzz corpora (fuzz/corpus/<target>/) through
//! the same checks the fuzz targets run, so CI exercises them without
//! libFuzzer; plus a short deterministic pseudo-random run of each.

#[path = "../fuzz/logic.rs"]
mod logic;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect()
}

fn replay(target: &str, f: fn(&[u8])) {
    let mut failed = Vec::new();
    for (path, data) in corpus(target) {
        if std::panic::catch_unwind(|| f(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: these corpus files fail: {failed:#?}");
}

/// xorshift bytes: reproducible "random" inputs.
fn inputs(seed: u64, n: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..n)
        .map(|_| {
            let len = (next() as usize) % max_len;
            (0..len).map(|_| next() as u8).collect()
        })
        .collect()
}

#[test]
fn config_line_corpus_replays_cleanly() {
    replay("config_line", logic::config_line);
}

#[test]
fn config_grammar_corpus_replays_cleanly() {
    replay("config_grammar", logic::config_grammar);
}

#[test]
fn core_events_corpus_replays_cleanly() {
    replay("core_events", logic::core_events);
}

#[test]
fn client_hello_corpus_replays_cleanly() {
    replay("client_hello", logic::client_hello);
}

#[test]
fn client_hello_pseudo_random_and_mutated_seeds() {
    for (i, data) in inputs(0x5eed_0002, 2000, 300).iter().enumerate() {
        if std::panic::catch_unwind(|| logic::client_hello(data)).is_err() {
            panic!("input {i} fails: {data:?}");
        }
    }
    // Every seed hello with each byte flipped: deep into the extensions.
    for (path, seed) in corpus("client_hello") {
        for i in 0..seed.len() {
            let mut bad = seed.clone();
            bad[i] ^= 0x41;
            if std::panic::catch_unwind(|| logic::client_hello(&bad)).is_err() {
                panic!("{} with byte {i} flipped fails", path.display());
            }
        }
    }
}

#[test]
fn proxy_header_corpus_replays_cleanly() {
    replay("proxy_header", logic::proxy_header);
}

#[test]
fn proxy_header_pseudo_random_inputs() {
    // Random tails behind each signature, so the inputs reach past the first check.
    for (i, tail) in inputs(0x5eed_0002, 3000, 200).iter().enumerate() {
        for head in [&b""[..], b"PROXY ", b"PROXY TCP4 ", b"\r\n\r\n\0\r\nQUIT\n\x21"] {
            let data = [head, &tail[..]].concat();
            if std::panic::catch_unwind(|| logic::proxy_header(&data)).is_err() {
                panic!("input {i} fails: {data:?}");
            }
        }
    }
}

#[test]
fn core_events_pseudo_random_sequences() {
    for (i, data) in inputs(0x5eed_0001, 3000, 400).iter().enumerate() {
        if std::panic::catch_unwind(|| logic::core_events(data)).is_err() {
            panic!("input {i} fails: {data:?}");
        }
    }
}

#[test]
fn config_line_mutated_seed_lines() {
    // Every seed line with one word dropped, doubled or swapped with a neighbour.
    let lines: Vec<&str> = logic::SEED_CONFIG.lines().collect();
    for line in &lines {
        let words: Vec<&str> = line.split(' ').collect();
        for i in 0..words.len() {
            let mut dropped = words.clone();
            dropped.remove(i);
            let mut doubled = words.clone();
            doubled.insert(i, words[i]);
            let mut swapped = words.clone();
            if i + 1 < words.len() {
                swapped.swap(i, i + 1);
            }
            for variant in [dropped, doubled, swapped] {
                let text = variant.join(" ");
                if std::panic::catch_unwind(|| logic::config_line(text.as_bytes())).is_err() {
                    panic!("fails: {text:?}");
                }
            }
        }
    }
}
