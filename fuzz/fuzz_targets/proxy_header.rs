#![no_main]
//! The PROXY protocol header parser on arbitrary first bytes of a connection.

#[path = "../logic.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::proxy_header(data));
