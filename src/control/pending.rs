//! Temporary adapters until config's save/diff/show land.
#![allow(dead_code)]
use crate::config::{Command, Model};
pub fn to_commands(_m: &Model) -> String { String::from("# not available\n") }
pub fn save_atomically(_p: &std::path::Path, _t: &str) -> std::io::Result<()> { Err(std::io::Error::other("save not available")) }
pub fn diff(_a: &Model, _b: &Model) -> Vec<Command> { Vec::new() }
pub fn show(_m: &Model, _l: &str) -> Result<String, String> { Err("show not available".into()) }
