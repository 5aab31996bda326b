//! Reads a whole configuration: text to commands to a validated [`Model`].
//!
//! Loading keeps going after an error so that one run reports every bad
//! line of a file. A later line that fails only because it names what a
//! failed `add` would have made is not reported again: each cause once.
//! Each error reads `FILE:LINE: reason`. A file that loads with errors
//! gives no model at all. Certificate and key paths are resolved against
//! the config file's folder.

use std::fmt;
use std::path::{Path, PathBuf};

use super::apply::{read_regular, CommandError, DirFileSource, FileSource};
use super::command::Command;
use super::grammar::parse_line;
use super::model::Model;

/// One error in a configuration text, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or other source) name, as given to the loader.
    pub file: String,
    /// 1-based line number; 0 when the error concerns the whole file.
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parse every line of `text`. Returns the commands with their 1-based
/// line numbers, or every line that does not parse.
pub fn parse_text(text: &str, source_name: &str) -> Result<Vec<(usize, Command)>, Vec<ConfigError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut cmds = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(c)) => cmds.push((i + 1, c)),
            Ok(None) => {}
            Err(reason) => errors.push(ConfigError {
                file: source_name.to_string(),
                line: i + 1,
                reason: reason.to_string(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(cmds)
    } else {
        Err(errors)
    }
}

/// Parse and apply `text` to an empty model, reporting every error. Every
/// entity of the model is at epoch 1.
pub fn load_text(text: &str, source_name: &str, files: &dyn FileSource) -> Result<Model, Vec<ConfigError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut model = Model::default();
    let mut errors = Vec::new();
    // What failed `add`s would have made, as error messages name it.
    let mut never_made: Vec<String> = Vec::new();
    let err = |line: usize, reason: String| ConfigError {
        file: source_name.to_string(),
        line,
        reason,
    };
    for (i, line) in text.lines().enumerate() {
        let cmd = match parse_line(line) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(reason) => {
                errors.push(err(i + 1, reason.to_string()));
                continue;
            }
        };
        if cmd.is_query() {
            errors.push(err(i + 1, format!("'{cmd}' does not belong in a configuration file")));
            continue;
        }
        match model.apply(&cmd, files) {
            Ok(_) => {}
            Err(CommandError::Unknown(why)) if never_made.iter().any(|m| names(&why, m)) => {}
            Err(reason) => {
                never_made.extend(made_by(&cmd));
                errors.push(err(i + 1, reason.to_string()));
            }
        }
    }
    if errors.is_empty() {
        // A file is one transaction: everything in it starts at epoch 1,
        // however many of its commands touched it.
        for e in model.epochs.values_mut() {
            *e = 1;
        }
        Ok(model)
    } else {
        Err(errors)
    }
}

/// What `cmd` makes, as an "unknown ..." error names it: `certKey site`.
fn made_by(cmd: &Command) -> Option<String> {
    match cmd {
        Command::AddCertKey { name, .. } => Some(format!("certKey {name}")),
        Command::AddCipherGroup { name } => Some(format!("cipher group {name}")),
        Command::AddProfile { name, .. } => Some(format!("ssl profile {name}")),
        Command::AddVserver { name, .. } => Some(format!("vserver {name}")),
        Command::AddService { name, .. } => Some(format!("service {name}")),
        Command::AddServiceGroup { name, .. } => Some(format!("serviceGroup {name}")),
        _ => None,
    }
}

/// Whether `message` names `what` (`certKey site`) as a whole: not
/// `certKey site2`.
fn names(message: &str, what: &str) -> bool {
    message.match_indices(what).any(|(at, _)| {
        let before = message[..at].chars().next_back();
        let after = message[at + what.len()..].chars().next();
        before.is_none_or(char::is_whitespace) && after.is_none_or(|c| !(c.is_alphanumeric() || "_-.".contains(c)))
    })
}

/// The largest configuration file read, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The folder relative certificate and key paths of the file at `path`
/// are resolved against.
pub fn config_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Read the configuration file at `path`. Certificate and key paths in it
/// are relative to its folder, and may be anywhere.
pub fn load_file(path: &Path) -> Result<Model, Vec<ConfigError>> {
    load_file_with(path, &DirFileSource::new(config_dir(path)))
}

/// [`load_file`], reading certificates and keys through `files`. The
/// file itself is read as they are: a regular file only, at most
/// [`MAX_CONFIG_BYTES`], never blocking.
pub fn load_file_with(path: &Path, files: &DirFileSource) -> Result<Model, Vec<ConfigError>> {
    let name = path.display().to_string();
    let mut bytes = read_regular(path, MAX_CONFIG_BYTES).map_err(|e| {
        vec![ConfigError {
            file: name.clone(),
            line: 0,
            reason: format!("cannot read: {e}"),
        }]
    })?;
    let text = String::from_utf8(std::mem::take(&mut *bytes)).map_err(|e| {
        vec![ConfigError {
            file: name.clone(),
            line: 0,
            reason: format!("not UTF-8 text: {e}"),
        }]
    })?;
    load_text(&text, &name, files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::Fixture;

    #[test]
    fn reports_every_error_with_file_and_line() {
        let fx = Fixture::new();
        fx.leaf("a", "a.test");
        fx.leaf("b", "b.test");
        let text = "\
# certificates
add ssl certKey a -cert a.crt -key a.key
add ssl certKey bad -cert b.crt -key a.key
add ssl certKey gone -cert missing.crt
bind ssl cipher nogroup -cipherName TLS1.3-AES999
add ssl cipher g
bind ssl cipher g -cipherName TLS1.3-AES128-GCM-SHA256
add lb vserver v SSL_TCP 10.0.0.300 443
add lb vserver v SSL_TCP 127.0.0.1 8443
add lb vserver v SSL_TCP 127.0.0.1 8444
bind ssl vserver v -certkeyName nosuch
bind ssl vserver v -eccCurveName P_999
show stats
bind ssl vserver v -certkeyName a
";
        let path = fx.write("ns.conf", text.as_bytes());
        let errs = load_file(&path).unwrap_err();
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let name = path.display().to_string();
        let expect = [
            (3, "does not match certificate"),
            (4, "cannot read"),
            (5, "unknown cipher 'TLS1.3-AES999'"),
            (8, "bad IP address '10.0.0.300'"),
            (10, "lb vserver v already exists"),
            (11, "unknown certKey nosuch"),
            (12, "unknown ECC curve 'P_999'"),
            (13, "does not belong in a configuration file"),
        ];
        assert_eq!(lines.len(), expect.len(), "{lines:#?}");
        for (got, (line, reason)) in lines.iter().zip(expect) {
            let prefix = format!("{name}:{line}: ");
            assert!(
                got.starts_with(&prefix) && got.contains(reason),
                "{got} (wanted {prefix}...{reason})"
            );
        }
        assert!(lines[1].contains("missing.crt"), "{}", lines[1]);
    }

    #[test]
    fn loads_a_good_file_relative_to_its_folder() {
        let fx = Fixture::new();
        std::fs::create_dir(fx.path().join("certs")).unwrap();
        fx.leaf("certs/a", "a.test");
        let path = fx.write(
            "ns.conf",
            b"\xef\xbb\xbfadd ssl certKey a -cert certs/a.crt -key certs/a.key\r\n\
            add lb vserver v SSL_TCP 127.0.0.1 443\r\nbind ssl vserver v -certkeyName a\r\n",
        );
        let m = load_file(&path).unwrap();
        assert_eq!(m.vservers["v"].bindings.certkeys.len(), 1);
        assert_eq!(m.certkeys["a"].cert_path, Path::new("certs/a.crt"));
    }

    #[test]
    fn missing_or_binary_file() {
        let fx = Fixture::new();
        let e = load_file(&fx.path().join("nope.conf")).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].to_string().contains("nope.conf: cannot read"), "{}", e[0]);
        let p = fx.write("bin.conf", &[0xff, 0xfe, 0x00]);
        assert!(load_file(&p).unwrap_err()[0].reason.contains("not UTF-8"));
    }

    #[test]
    fn parse_text_collects_all_parse_errors() {
        let errs = parse_text("add ssl cipher g\nbogus\n\nadd service s 1.2.3.4 80 UDP\n", "x.conf").unwrap_err();
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("x.conf:2: unknown command"));
        assert!(lines[1].starts_with("x.conf:4: bad protocol 'UDP'"));
        let ok = parse_text("# c\nadd ssl cipher g\n", "x").unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].0, 2);
    }

    #[test]
    fn a_name_is_matched_whole() {
        assert!(names("unknown certKey site", "certKey site"));
        assert!(names("cannot link leaf: unknown CA certKey site", "certKey site"));
        assert!(names("unknown lb vserver www", "vserver www"));
        assert!(!names("unknown certKey site2", "certKey site"));
        assert!(!names("unknown certKey my-site", "certKey site"));
        assert!(!names("unknown certKey site.old", "certKey site"));
    }
}
