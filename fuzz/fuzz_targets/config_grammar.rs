#![no_main]
//! Command lines written from the command table, through the parser and validator.
//! Run with `-dict=fuzz/config_line.dict` for the other target.

#[path = "../logic.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::config_grammar(data));
