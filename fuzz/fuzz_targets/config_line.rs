#![no_main]
//! The command-language parser and validator on arbitrary text. Its
//! dictionary, generated from the command table: `-dict=config_line.dict`.

#[path = "../logic.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::config_line(data));
