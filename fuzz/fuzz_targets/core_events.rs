#![no_main]
//! The per-shard session lifecycle driven by arbitrary event sequences.

#[path = "../logic.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::core_events(data));
