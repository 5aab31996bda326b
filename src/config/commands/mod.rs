//! The command table: every command and flag of the language, declared once.
//!
//! Each entry gives a command's verb, object words, positional arguments and
//! flags (value type, range, default, and which epochs a change opens), a
//! line of help, how its parsed fields become a [`Command`] and how a
//! command gives its fields back. The parser, the printer used by `save`,
//! `show` and `diff`, `show help`, `ctl --help`, the fuzz dictionary and the
//! property tests' generator all read this table (see `grammar`). Checks
//! that need the running configuration belong to `apply`, not here.
//!
//! Adding an SSL parameter: one line in [`SSL_PARAMS`] (and the field in
//! `SslParams`). Adding any other flag: one `static` [`FlagSpec`], listed on
//! its commands, read in their `build` and given back in their `fields`.

mod certs;
mod flags;
mod lb;
mod queries;
mod ssl_entities;

pub use flags::{is_ssl_param, SslParamFlag, SSL_PARAMS};

use super::command::{Command, ObjectKind};
use super::grammar::{ArgSpec, CommandSpec, Fields, FlagSpec};
use super::model::{EntityKind, SslParams};
use super::values::{FromValue, Value, ValueType};

impl Fields {
    /// A required flag's value.
    fn need<T: FromValue>(&mut self, f: &'static FlagSpec) -> Result<T, String> {
        self.take(f)
            .ok_or_else(|| format!("{}: missing {}", self.context, f.name))
    }

    fn ssl_params(&mut self) -> SslParams {
        let mut p = SslParams::default();
        for sp in SSL_PARAMS {
            if let Some(v) = self.take::<Value>(&sp.flag) {
                (sp.set)(&mut p, v);
            }
        }
        p
    }

    fn with_ssl_params(mut self, p: &SslParams) -> Self {
        for sp in SSL_PARAMS {
            if let Some(v) = (sp.get)(p) {
                self.flags.push((sp.flag.name, v));
            }
        }
        self
    }
}

impl FromValue for Value {
    fn from_value(v: Value) -> Option<Self> {
        Some(v)
    }
}

/// A spec under construction.
pub(super) struct Spec(CommandSpec);

pub(super) fn cmd(verb: &'static str, object: &'static str, help: &'static str) -> Spec {
    Spec(CommandSpec {
        verb,
        object,
        args: Vec::new(),
        flags: Vec::new(),
        needs_flag: false,
        takes_ssl_params: false,
        alias: false,
        help,
        build: Box::new(|_| Err("no build rule".into())),
        fields: Box::new(|_| None),
    })
}

impl Spec {
    fn arg(mut self, label: &'static str, what: &'static str, value: ValueType) -> Self {
        self.0.args.push(ArgSpec {
            label,
            what,
            value,
            optional: false,
        });
        self
    }
    fn name(self, what: &'static str) -> Self {
        self.arg("NAME", what, ValueType::Name)
    }
    fn opt_name(mut self) -> Self {
        self.0.args.push(ArgSpec {
            label: "NAME",
            what: "name",
            value: ValueType::Name,
            optional: true,
        });
        self
    }
    fn flag(mut self, f: &'static FlagSpec) -> Self {
        self.0.flags.push((f, false));
        self
    }
    fn required(mut self, f: &'static FlagSpec) -> Self {
        self.0.flags.push((f, true));
        self
    }
    fn ssl_params(mut self) -> Self {
        self.0.takes_ssl_params = true;
        self.0.flags.extend(SSL_PARAMS.iter().map(|p| (&p.flag, false)));
        self
    }
    fn needs_flag(mut self) -> Self {
        self.0.needs_flag = true;
        self
    }
    fn alias(mut self) -> Self {
        self.0.alias = true;
        self
    }
    fn rule(
        mut self,
        build: impl Fn(&mut Fields) -> Result<Command, String> + Send + Sync + 'static,
        fields: impl Fn(&Command) -> Option<Fields> + Send + Sync + 'static,
    ) -> CommandSpec {
        self.0.build = Box::new(build);
        self.0.fields = Box::new(fields);
        self.0
    }
}

pub(super) const ENTITY_KINDS: [EntityKind; 3] = [EntityKind::Vserver, EntityKind::Service, EntityKind::ServiceGroup];
pub(super) const OBJECT_KINDS: [ObjectKind; 7] = [
    ObjectKind::CertKey,
    ObjectKind::CipherGroup,
    ObjectKind::Profile,
    ObjectKind::NetProfile,
    ObjectKind::Vserver,
    ObjectKind::Service,
    ObjectKind::ServiceGroup,
];

pub(super) fn ssl_object(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Vserver => "ssl vserver",
        EntityKind::Service => "ssl service",
        EntityKind::ServiceGroup => "ssl serviceGroup",
    }
}

pub(super) fn entity_object(kind: EntityKind) -> &'static str {
    ObjectKind::from(kind).words()
}

/// The whole table, in the order of `show help`.
pub(super) fn table() -> Vec<CommandSpec> {
    let mut t = Vec::new();
    certs::certkey_commands(&mut t);
    certs::cipher_and_profile_commands(&mut t);
    lb::net_profile_commands(&mut t);
    lb::vserver_and_backend_commands(&mut t);
    for kind in ENTITY_KINDS {
        ssl_entities::ssl_entity_commands(&mut t, kind);
    }
    queries::state_and_query_commands(&mut t);
    t
}

/// The SSL parameters `p` sets, as ` -flag value` pairs (for `show`).
pub fn write_ssl_params(out: &mut String, p: &SslParams) {
    for sp in SSL_PARAMS {
        if let Some(v) = (sp.get)(p) {
            out.push(' ');
            out.push_str(sp.flag.name);
            if let Some(word) = sp.flag.value.print(&v) {
                out.push(' ');
                out.push_str(&word);
            }
        }
    }
}
