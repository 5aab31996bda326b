#![no_main]
//! The ClientHello peek on arbitrary bytes, whole and cut at every length.

#[path = "../logic.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::client_hello(data));
