#![no_main]
//! The command-language parser and validator on arbitrary text.

#[path = "../logic.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::config_line(data));
