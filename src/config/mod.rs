//! The configuration language: a subset of the NetScaler ADC CLI.
//!
//! Text flows one way: `lexer` splits a line into words, `parser` turns words
//! into a typed [`Command`], `apply` validates a command against a [`Model`]
//! and changes it (reporting which entity sides it affects), `load` does
//! that for a whole file, `save` writes a model back as commands, `diff`
//! gives the commands between two models (reload), `show` renders text for
//! `show` commands. This module does no IO except reading the files a command names (certificates
//! and keys) through a [`FileSource`], reading a config file, and writing
//! one atomically.

pub mod apply;
pub mod diff;
pub mod lexer;
pub mod load;
pub mod model;
pub mod parser;
pub mod save;
pub mod show;

#[cfg(test)]
mod testutil;

pub use apply::{BatchError, Change, ChangeKind, DirFileSource, FileSource, DEFAULT_CLIENT_TIMEOUT};
pub use diff::diff;
pub use load::{load_file, load_text, parse_text, ConfigError};
pub use model::*;
pub use parser::{parse_line, parse_words, Command, ObjectKind, ShowWhat, SslBind};
pub use save::save_atomically;
pub use show::show;
