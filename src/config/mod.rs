//! The configuration language: a subset of the NetScaler ADC CLI.
//!
//! Text flows one way: `lexer` splits a line into words, `parser` turns words
//! into a typed [`Command`], `apply` validates a command against a [`Model`]
//! and changes it (reporting which entity sides it affects), `save` writes a
//! model back as commands. This module does no IO except reading the files a
//! command names (certificates and keys) through a [`FileSource`].

pub mod lexer;
pub mod model;
pub mod parser;

pub use model::*;
pub use parser::{parse_line, parse_words, Command, ObjectKind, ShowWhat, SslBind};
