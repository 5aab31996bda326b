//! Reads and writes commands through the declared command table.
//!
//! Every command is declared once, as a [`CommandSpec`] in `commands`: its
//! verb, the words naming its object, its positional arguments and its flags
//! (each a [`FlagSpec`] with its value type, range, default and epoch
//! [`Scope`]). This module holds no knowledge of any particular command:
//! [`parse_words`] matches a line against the table, reads every value by
//! its declared type into [`Fields`] and lets the spec build the typed
//! [`Command`]; `Display for Command` asks the spec for the command's fields
//! and writes them in the declared order; [`help_text`] and
//! [`fuzz_dictionary`] list the table; [`sample_line`] writes a line from
//! the table out of arbitrary choices (for property tests and fuzzing). A
//! flag can therefore not be read without being written, or the reverse.
//! Keywords and flag names are case-insensitive; names are kept as written.
//! A flag given twice on a line combines by its value type
//! ([`ValueType::repeat`]: a list appends, another value is the last one).
//! When a command has several specs (an alias ordering), the error shown is
//! that of the spec that read furthest.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::LazyLock;

use super::command::Command;
use super::lexer::split_words;
use super::values::{FromValue, Value, ValueType};

/// The side whose epochs a setting's change opens (DESIGN.md section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Client-facing connections: vservers.
    Front,
    /// Server-facing connections: services and serviceGroups.
    Back,
    /// Whichever side the entity that uses it is on.
    Both,
    /// Not a TLS setting (limits, health checks, member addresses): no epoch opens.
    NoEpoch,
}

impl Scope {
    fn word(self) -> &'static str {
        match self {
            Scope::Front => "front end",
            Scope::Back => "back end",
            Scope::Both => "both sides",
            Scope::NoEpoch => "no epoch",
        }
    }
}

/// One flag: `-name VALUE`, or a bare `-name` for [`ValueType::Presence`].
#[derive(Debug)]
pub struct FlagSpec {
    /// Canonical spelling, as `save` writes it.
    pub name: &'static str,
    pub value: ValueType,
    pub scope: Scope,
    /// What applies when the flag is not given, for the help text.
    pub default: Option<&'static str>,
    pub help: &'static str,
}

/// One positional argument.
#[derive(Clone, Copy, Debug)]
pub struct ArgSpec {
    /// How the help text shows it (`NAME`, `IP`, ...).
    pub label: &'static str,
    /// What it is, for error messages ("missing CA certKey name").
    pub what: &'static str,
    pub value: ValueType,
    /// Only the last arguments may be optional.
    pub optional: bool,
}

/// How a spec turns parsed fields into a command.
pub type BuildFn = Box<dyn Fn(&mut Fields) -> Result<Command, String> + Send + Sync>;
/// How a spec gives a command's fields back, when the command is its own.
pub type FieldsFn = Box<dyn Fn(&Command) -> Option<Fields> + Send + Sync>;

/// One command of the language, declared once.
pub struct CommandSpec {
    pub verb: &'static str,
    /// The words naming what the command acts on, canonical case, e.g. `ssl certKey`.
    pub object: &'static str,
    pub args: Vec<ArgSpec>,
    /// Flags in the order `save` writes them, each with whether it is required.
    pub flags: Vec<(&'static FlagSpec, bool)>,
    /// `set` commands: refused when no flag is given ("nothing to set").
    pub needs_flag: bool,
    /// Takes the SSL parameters: an unknown flag is reported as an unknown SSL parameter.
    pub takes_ssl_params: bool,
    /// Another accepted spelling of a command that another spec writes.
    pub alias: bool,
    pub help: &'static str,
    pub(super) build: BuildFn,
    pub(super) fields: FieldsFn,
}

/// The arguments and flags of one command line, typed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// Positional values in order (`None`: an optional one not given).
    pub args: Vec<Option<Value>>,
    /// Flags given, with their values (`Bool(true)` for a bare flag).
    pub flags: Vec<(&'static str, Value)>,
    /// `verb object first-argument`, for error messages.
    pub context: String,
}

impl Fields {
    pub fn new() -> Self {
        Fields::default()
    }

    /// Add a positional value (writing side).
    pub fn arg(mut self, v: impl Into<Value>) -> Self {
        self.args.push(Some(v.into()));
        self
    }

    /// Add an optional positional value (writing side).
    pub fn opt_arg(mut self, v: Option<impl Into<Value>>) -> Self {
        self.args.push(v.map(Into::into));
        self
    }

    /// Add a flag with its value (writing side).
    pub fn flag(self, f: &'static FlagSpec, v: impl Into<Value>) -> Self {
        self.opt_flag(f, Some(v))
    }

    /// Add a flag when it has a value (writing side).
    pub fn opt_flag(mut self, f: &'static FlagSpec, v: Option<impl Into<Value>>) -> Self {
        if let Some(v) = v {
            self.flags.push((f.name, v.into()));
        }
        self
    }

    /// Add a bare flag when `on` (writing side).
    pub fn bare(self, f: &'static FlagSpec, on: bool) -> Self {
        self.opt_flag(f, on.then_some(true))
    }

    /// Positional value `i` (reading side). Fails only on a table error.
    pub fn take_arg<T: FromValue>(&mut self, i: usize) -> Result<T, String> {
        self.take_opt_arg(i)?
            .ok_or_else(|| format!("{}: missing argument {}", self.context, i + 1))
    }

    /// Optional positional value `i` (reading side).
    pub fn take_opt_arg<T: FromValue>(&mut self, i: usize) -> Result<Option<T>, String> {
        match self.args.get_mut(i).and_then(Option::take) {
            None => Ok(None),
            Some(v) => T::from_value(v)
                .map(Some)
                .ok_or_else(|| format!("{}: argument {} has the wrong type", self.context, i + 1)),
        }
    }

    /// The value of flag `f`, when given (reading side).
    pub fn take<T: FromValue>(&mut self, f: &'static FlagSpec) -> Option<T> {
        let i = self.flags.iter().position(|(n, _)| *n == f.name)?;
        T::from_value(self.flags.remove(i).1)
    }

    /// Whether bare flag `f` was given (reading side).
    pub fn present(&mut self, f: &'static FlagSpec) -> bool {
        self.take::<bool>(f).unwrap_or(false)
    }
}

static TABLE: LazyLock<Vec<CommandSpec>> = LazyLock::new(super::commands::table);

/// Every command of the language, in help order.
pub fn commands() -> &'static [CommandSpec] {
    &TABLE
}

fn object_words(spec: &CommandSpec) -> Vec<&'static str> {
    spec.object.split(' ').filter(|w| !w.is_empty()).collect()
}

/// A line that is not a command of the language (always the user's
/// mistake): the message names what is wrong and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Parse one line. `Ok(None)` for a blank or comment-only line.
pub fn parse_line(line: &str) -> Result<Option<Command>, ParseError> {
    let words = split_words(line).map_err(ParseError)?;
    if words.is_empty() {
        return Ok(None);
    }
    parse_words(&words).map(Some)
}

/// Parse a line already split into words (not empty).
pub fn parse_words(words: &[String]) -> Result<Command, ParseError> {
    match_command(words).map_err(ParseError)
}

fn match_command(words: &[String]) -> Result<Command, String> {
    let verb = words.first().map(|w| w.to_ascii_lowercase()).unwrap_or_default();
    let mut candidates: Vec<&CommandSpec> = commands().iter().filter(|s| s.verb == verb).collect();
    if candidates.is_empty() {
        return Err(format!(
            "unknown command '{}'",
            words.first().map_or("", |w| w.as_str())
        ));
    }
    // Match the object's words, one position at a time.
    let mut pos = 1;
    let mut depth = 0;
    loop {
        let longer: Vec<&CommandSpec> = candidates
            .iter()
            .copied()
            .filter(|s| object_words(s).len() > depth)
            .collect();
        if longer.is_empty() {
            break;
        }
        let said = words[..pos].join(" ");
        let mut rest: Vec<String> = Vec::new();
        for s in &longer {
            let phrase = object_words(s)[depth..].join(" ");
            if !rest.contains(&phrase) {
                rest.push(phrase);
            }
        }
        let expected = quoted_list(&rest);
        let Some(word) = words.get(pos) else {
            return Err(if depth == 0 {
                format!("{said}: missing what to act on ({expected})")
            } else if rest.len() == 1 {
                format!("{said}: missing {expected}")
            } else {
                format!("{said}: missing one of {expected}")
            });
        };
        let matching: Vec<&CommandSpec> = longer
            .into_iter()
            .filter(|s| object_words(s)[depth].eq_ignore_ascii_case(word))
            .collect();
        if matching.is_empty() {
            if depth == 0 {
                if let Some(other) = object_elsewhere(&words[pos..]) {
                    return Err(format!("cannot {verb} {other}: only {expected}"));
                }
            }
            return Err(format!("{said}: unknown entity '{word}' (expected {expected})"));
        }
        candidates = matching;
        pos += 1;
        depth += 1;
    }
    // Specs of the same words (a canonical form and its aliases): the first
    // that reads wins. When none does, the error is that of the spec that
    // read furthest (the first of those): the one whose arguments all read
    // says what is wrong after them, not that an argument is out of order.
    let mut best: Option<(usize, String)> = None;
    for spec in candidates {
        let mut read = 0;
        match parse_rest(spec, &words[pos..], &mut read) {
            Ok(cmd) => return Ok(cmd),
            Err(e) => {
                if best.as_ref().is_none_or(|(furthest, _)| read > *furthest) {
                    best = Some((read, e));
                }
            }
        }
    }
    Err(best.map_or_else(|| format!("unknown command '{}'", words.join(" ")), |(_, e)| e))
}

/// The object some other verb knows `words` to start with (for "cannot disable ssl certKey").
fn object_elsewhere(words: &[String]) -> Option<&'static str> {
    commands().iter().map(|s| s.object).find(|o| {
        let ow: Vec<&str> = o.split(' ').collect();
        ow.len() <= words.len() && ow.iter().zip(words).all(|(a, b)| a.eq_ignore_ascii_case(b))
    })
}

fn quoted_list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    match q.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => q.join(""),
    }
}

/// Read `words` (what follows the object) as `spec`. `read` ends as the
/// number of words read without error: how far the line matched `spec`
/// (all of them when only the whole line is wrong).
fn parse_rest(spec: &CommandSpec, words: &[String], read: &mut usize) -> Result<Command, String> {
    let mut fields = Fields::new();
    let mut i = 0;
    for a in &spec.args {
        *read = i;
        match words.get(i) {
            None if a.optional => fields.args.push(None),
            None => return Err(format!("missing {}", a.what)),
            Some(w) => {
                fields.args.push(Some(a.value.parse(w, a.what)?));
                i += 1;
            }
        }
    }
    fields.context = format!("{} {}", spec.verb, spec.object);
    if let Some(w) = words.first().filter(|_| !spec.args.is_empty()) {
        fields.context = format!("{} {w}", fields.context);
    }
    while let Some(word) = words.get(i) {
        *read = i;
        i += 1;
        if spec.flags.is_empty() {
            return Err(format!("unexpected extra word '{word}'"));
        }
        if !word.starts_with('-') || word.len() < 2 {
            return Err(format!("unexpected word '{word}' where a -flag was expected"));
        }
        let Some((flag, _)) = spec.flags.iter().find(|(f, _)| f.name.eq_ignore_ascii_case(word)) else {
            return Err(unknown_flag(spec, &fields.context, word));
        };
        let value = match flag.value {
            ValueType::Presence => Value::Bool(true),
            ValueType::SwitchOrBare => match words.get(i) {
                Some(w) if !w.starts_with('-') => {
                    i += 1;
                    flag.value.parse(w, word)?
                }
                _ => Value::Bool(true),
            },
            ty => {
                let w = words.get(i).ok_or_else(|| format!("missing value for {word}"))?;
                i += 1;
                ty.parse(w, word)?
            }
        };
        // Given again: its value type says how the two combine.
        if let Some((_, slot)) = fields.flags.iter_mut().find(|(n, _)| *n == flag.name) {
            let earlier = std::mem::replace(slot, Value::Bool(false));
            *slot = flag.value.repeat(earlier, value, word)?;
        } else {
            fields.flags.push((flag.name, value));
        }
    }
    *read = words.len();
    for (flag, required) in &spec.flags {
        if *required && !fields.flags.iter().any(|(n, _)| *n == flag.name) {
            return Err(format!(
                "{}: missing {} {}",
                fields.context,
                flag.name,
                flag.value.label()
            ));
        }
    }
    if spec.needs_flag && fields.flags.is_empty() {
        return Err(format!("{}: nothing to set", fields.context));
    }
    let context = fields.context.clone();
    let cmd = (spec.build)(&mut fields)?;
    if let Some((name, _)) = fields.flags.first() {
        return Err(format!("{context}: {name} does not apply here"));
    }
    Ok(cmd)
}

fn unknown_flag(spec: &CommandSpec, context: &str, word: &str) -> String {
    if spec.takes_ssl_params {
        return format!("{context}: unknown SSL parameter '{word}'");
    }
    let names: Vec<&str> = spec.flags.iter().map(|(f, _)| f.name).collect();
    let expected = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    };
    format!("{context}: unknown flag '{word}' (expected {expected})")
}

/// The canonical spec that writes `cmd`, with the command's fields.
fn spec_of(cmd: &Command) -> Option<(&'static CommandSpec, Fields)> {
    commands()
        .iter()
        .filter(|s| !s.alias)
        .find_map(|s| (s.fields)(cmd).map(|f| (s, f)))
}

impl fmt::Display for Command {
    /// The canonical text, which parses back into the same command.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((spec, fields)) = spec_of(self) else {
            // Every command has a spec (checked by the tests); never reached.
            return write!(f, "# unprintable command {self:?}");
        };
        write!(f, "{} {}", spec.verb, spec.object)?;
        for (a, v) in spec.args.iter().zip(&fields.args) {
            if let Some(word) = v.as_ref().and_then(|v| a.value.print(v)) {
                write!(f, " {word}")?;
            }
        }
        for (flag, _) in &spec.flags {
            if let Some((_, v)) = fields.flags.iter().find(|(n, _)| *n == flag.name) {
                if flag.value == ValueType::Presence && *v != Value::Bool(true) {
                    continue;
                }
                write!(f, " {}", flag.name)?;
                if let Some(word) = flag.value.print(v) {
                    write!(f, " {word}")?;
                }
            }
        }
        Ok(())
    }
}

/// One line of usage for `spec`: `add ssl certKey NAME -cert FILE [-key FILE]`.
pub fn usage(spec: &CommandSpec) -> String {
    let mut s = format!("{} {}", spec.verb, spec.object);
    for a in &spec.args {
        if a.optional {
            s.push_str(&format!(" [{}]", a.label));
        } else {
            s.push_str(&format!(" {}", a.label));
        }
    }
    if spec.takes_ssl_params {
        s.push_str(" [SSL parameters]");
    }
    for (flag, required) in &spec.flags {
        if spec.takes_ssl_params && super::commands::is_ssl_param(flag) {
            continue;
        }
        let value = match flag.value {
            ValueType::Number { .. } => "N".to_string(),
            ty => ty.label(),
        };
        let f = if value.is_empty() {
            flag.name.to_string()
        } else {
            format!("{} {value}", flag.name)
        };
        if *required {
            s.push_str(&format!(" {f}"));
        } else {
            s.push_str(&format!(" [{f}]"));
        }
    }
    s
}

/// Every command, then every flag with its values, range, default and
/// scope: the text of `show help` and of `shardtls ctl --help`.
pub fn help_text() -> String {
    let mut out = String::from("Commands:\n");
    for spec in commands().iter().filter(|s| !s.alias) {
        out.push_str(&format!("  {}\n      {}\n", usage(spec), spec.help));
    }
    out.push_str("\nFlags (value; default; which epochs a change opens):\n");
    let mut seen = BTreeSet::new();
    for spec in commands() {
        for (flag, _) in &spec.flags {
            if !seen.insert((flag.name, flag.value.label())) {
                continue;
            }
            let value = flag.value.label();
            out.push_str(&format!(
                "  {}{}{}; default {}; {}\n      {}\n",
                flag.name,
                if value.is_empty() { "" } else { " " },
                value,
                flag.default.unwrap_or("none"),
                flag.scope.word(),
                flag.help
            ));
        }
    }
    out
}

/// Every keyword of the language, one per line in libFuzzer's dictionary
/// format (`fuzz/config_line.dict`).
pub fn fuzz_dictionary() -> String {
    let mut words = BTreeSet::new();
    for spec in commands() {
        words.insert(spec.verb.to_string());
        words.extend(object_words(spec).into_iter().map(str::to_string));
        for a in &spec.args {
            words.extend(a.value.keywords().into_iter().map(str::to_string));
        }
        for (flag, _) in &spec.flags {
            words.insert(flag.name.to_string());
            words.extend(flag.value.keywords().into_iter().map(str::to_string));
        }
    }
    let mut out = String::from("# Generated from the command table: config::grammar::fuzz_dictionary().\n");
    for w in words {
        out.push_str(&format!("\"{w}\"\n"));
    }
    out
}

/// A command line written from the table, each choice taken from `pick`
/// (called with the number of options, returning any number): a random
/// spec, its arguments, and a random subset of its flags, with values of
/// the declared types (mostly valid, sometimes at the ends of a range).
/// Used by the property tests and the grammar fuzz target.
pub fn sample_line(pick: &mut dyn FnMut(usize) -> usize) -> String {
    let specs = commands();
    let spec = &specs[pick(specs.len()) % specs.len()];
    let mut words = vec![spec.verb.to_string(), spec.object.to_string()];
    for a in &spec.args {
        if a.optional && pick(2) == 0 {
            break;
        }
        words.push(sample_value(a.value, pick));
    }
    for (flag, required) in &spec.flags {
        if *required || pick(3) == 0 {
            words.push(flag.name.to_string());
            match flag.value {
                ValueType::Presence => {}
                ValueType::SwitchOrBare if pick(2) == 0 => {}
                ty => words.push(sample_value(ty, pick)),
            }
        }
    }
    words.join(" ")
}

fn sample_value(ty: ValueType, pick: &mut dyn FnMut(usize) -> usize) -> String {
    use super::lexer::quote_word;
    use super::model::{CipherSuiteName, Curve};
    let one = |list: &[&str], pick: &mut dyn FnMut(usize) -> usize| list[pick(list.len()) % list.len()].to_string();
    let suite = |pick: &mut dyn FnMut(usize) -> usize| {
        CipherSuiteName::ALL[pick(CipherSuiteName::ALL.len()) % CipherSuiteName::ALL.len()].adc_name()
    };
    const NAMES: [&str; 6] = ["a", "b", "web", "my name", "Ca-1", "x\"y"];
    match ty {
        ValueType::Name => quote_word(&one(&NAMES, pick)),
        ValueType::Path => quote_word(&one(&["a.pem", "/etc/ssl/b.key", "dir name/c.crt"], pick)),
        ValueType::Number { min, max } => match pick(4) {
            0 => min.to_string(),
            1 => max.to_string(),
            _ => (min + (pick(1000) as u32) % (max - min + 1).max(1))
                .min(max)
                .to_string(),
        },
        ValueType::Switch | ValueType::SwitchOrBare => one(&["ENABLED", "DISABLED", "enabled"], pick),
        ValueType::Presence => String::new(),
        ValueType::Ip => one(&["127.0.0.1", "10.1.2.3", "::1", "fe80::2"], pick),
        ValueType::Port => one(&["1", "80", "443", "65535"], pick),
        ValueType::BackendProto => one(&["TCP", "SSL_TCP", "ssl_tcp", "SSL_BRIDGE"], pick),
        ValueType::VserverProto => one(&["SSL_TCP", "SSL_BRIDGE"], pick),
        ValueType::Suite => suite(pick).to_string(),
        ValueType::SuiteList => {
            let mut list = vec![suite(pick)];
            let other = suite(pick);
            if !list.contains(&other) {
                list.push(other);
            }
            list.join(",")
        }
        ValueType::Curve => Curve::ALL[pick(3) % 3].adc_name().to_string(),
        ValueType::CipherRef => match pick(2) {
            0 => suite(pick).to_string(),
            _ => quote_word(&one(&NAMES, pick)),
        },
        ValueType::ClientCert => one(&["MANDATORY", "OPTIONAL"], pick),
        ValueType::ServerName => one(&["back.test", "a.example"], pick),
        ValueType::AlpnList => quote_word(&one(&["h2", "h2,http/1.1", "x y"], pick)),
        ValueType::Reneg => one(&["ALL", "NO", "FRONTEND_CLIENT"], pick),
        ValueType::ProxyVersion => one(&["V1", "V2", "v2"], pick),
        ValueType::CidrList => one(&["127.0.0.0/8", "10.0.0.0/8,::1/128", "192.0.2.1"], pick),
    }
}
