//! The configuration language: a subset of the NetScaler ADC CLI.
//!
//! Text flows one way: `lexer` splits a line into words; `grammar` matches
//! the words against the command table (`commands`: every command and flag
//! declared once, with value types from `values`) and gives a typed
//! [`Command`]; `apply` validates a command against a [`Model`] and changes
//! it (reporting which entity sides it affects), one file per kind of
//! entity; `load` does that for a whole file; `save` writes a model back as
//! commands; `diff` gives the commands between two models (reload); `show`
//! renders text for `show` commands. `material` reads certificate and key
//! files into the model. This module does no IO except reading the files a
//! command names (certificates and keys) through a [`FileSource`], reading a
//! config file, and writing one atomically. It depends on no other module of
//! the crate; `tls`, `snapshot`, `control` and `shard` depend on it.

pub mod apply;
pub mod command;
pub mod commands;
pub mod diff;
pub mod grammar;
pub mod lexer;
pub mod load;
pub mod material;
pub mod model;
pub mod save;
pub mod show;
pub mod values;

#[cfg(test)]
mod parse_tests;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod table_tests;
#[cfg(test)]
mod testutil;

pub use apply::{
    canonical_dirs, BatchError, Change, ChangeKind, CommandError, DirFileSource, FileBytes, FileKind, FileSource,
    DEFAULT_CLIENT_TIMEOUT,
};
pub use command::{Command, ObjectKind, ShowWhat, SslBind};
pub use diff::diff;
pub use grammar::{help_text, parse_line, parse_words, ParseError};
pub use load::{config_dir, load_file, load_file_with, load_text, parse_text, ConfigError};
pub use material::SecretKeyDer;
pub use model::*;
pub use save::save_atomically;
pub use show::show;
