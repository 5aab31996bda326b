//! certKey, cipher group and SSL profile commands.

use super::cmd;
use super::flags::*;
use crate::config::command::Command;
use crate::config::grammar::{CommandSpec, Fields};
use crate::config::model::CipherSuiteName;

pub(super) fn certkey_commands(t: &mut Vec<CommandSpec>) {
    for verb in ["add", "update"] {
        let (what, help) = if verb == "add" {
            ("name", "Add a certificate, with its key unless it is only a CA.")
        } else {
            ("certKey name", "Re-read a certKey's files (keeping the key when -key is omitted): every entity using it opens an epoch.")
        };
        t.push(
            cmd(verb, "ssl certKey", help)
                .name(what)
                .required(&CERT)
                .flag(&KEY)
                .rule(
                    move |f| {
                        let (name, cert, key) = (f.take_arg(0)?, f.need(&CERT)?, f.take(&KEY));
                        Ok(if verb == "add" {
                            Command::AddCertKey { name, cert, key }
                        } else {
                            Command::UpdateCertKey { name, cert, key }
                        })
                    },
                    move |c| {
                        match c {
                            Command::AddCertKey { name, cert, key } if verb == "add" => Some((name, cert, key)),
                            Command::UpdateCertKey { name, cert, key } if verb == "update" => Some((name, cert, key)),
                            _ => None,
                        }
                        .map(|(name, cert, key)| {
                            Fields::new()
                                .arg(name.clone())
                                .flag(&CERT, cert.clone())
                                .opt_flag(&KEY, key.clone())
                        })
                    },
                ),
        );
    }
    t.push(
        cmd(
            "link",
            "ssl certKey",
            "Extend a certificate's chain with the certKey that issued it.",
        )
        .name("certKey name")
        .arg("CA", "CA certKey name", crate::config::values::ValueType::Name)
        .rule(
            |f| {
                Ok(Command::LinkCertKey {
                    name: f.take_arg(0)?,
                    ca: f.take_arg(1)?,
                })
            },
            |c| match c {
                Command::LinkCertKey { name, ca } => Some(Fields::new().arg(name.clone()).arg(ca.clone())),
                _ => None,
            },
        ),
    );
    t.push(
        cmd("unlink", "ssl certKey", "Remove a certKey's link to its issuer.")
            .name("certKey name")
            .rule(
                |f| Ok(Command::UnlinkCertKey { name: f.take_arg(0)? }),
                |c| match c {
                    Command::UnlinkCertKey { name } => Some(Fields::new().arg(name.clone())),
                    _ => None,
                },
            ),
    );
}

pub(super) fn cipher_and_profile_commands(t: &mut Vec<CommandSpec>) {
    t.push(
        cmd("add", "ssl cipher", "Add an empty cipher group.")
            .name("name")
            .rule(
                |f| {
                    let name: String = f.take_arg(0)?;
                    if CipherSuiteName::from_adc(&name).is_some() {
                        return Err(format!("cipher group name '{name}' is the name of a cipher suite"));
                    }
                    Ok(Command::AddCipherGroup { name })
                },
                |c| match c {
                    Command::AddCipherGroup { name } => Some(Fields::new().arg(name.clone())),
                    _ => None,
                },
            ),
    );
    for verb in ["bind", "unbind"] {
        let help = if verb == "bind" {
            "Append a suite to a cipher group: every entity bound to it opens an epoch."
        } else {
            "Remove a suite from a cipher group: every entity bound to it opens an epoch."
        };
        t.push(
            cmd(verb, "ssl cipher", help)
                .name("cipher group name")
                .required(&CIPHER_SUITE)
                .rule(
                    move |f| {
                        let (name, suite) = (f.take_arg(0)?, f.need(&CIPHER_SUITE)?);
                        Ok(if verb == "bind" {
                            Command::BindCipherGroup { name, suite }
                        } else {
                            Command::UnbindCipherGroup { name, suite }
                        })
                    },
                    move |c| match c {
                        Command::BindCipherGroup { name, suite } if verb == "bind" => {
                            Some(Fields::new().arg(name.clone()).flag(&CIPHER_SUITE, *suite))
                        }
                        Command::UnbindCipherGroup { name, suite } if verb == "unbind" => {
                            Some(Fields::new().arg(name.clone()).flag(&CIPHER_SUITE, *suite))
                        }
                        _ => None,
                    },
                ),
        );
    }
    t.push(
        cmd("set", "ssl cipher", "Replace a cipher group's suites, in this order.")
            .name("cipher group name")
            .flag(&CIPHER_SUITES)
            .needs_flag()
            .rule(
                |f| {
                    Ok(Command::SetCipherGroup {
                        name: f.take_arg(0)?,
                        suites: f.need(&CIPHER_SUITES)?,
                    })
                },
                |c| match c {
                    Command::SetCipherGroup { name, suites } => {
                        Some(Fields::new().arg(name.clone()).flag(&CIPHER_SUITES, suites.clone()))
                    }
                    _ => None,
                },
            ),
    );
    t.push(
        cmd("add", "ssl profile", "Add an SSL profile.")
            .name("name")
            .ssl_params()
            .rule(
                |f| {
                    Ok(Command::AddProfile {
                        name: f.take_arg(0)?,
                        params: f.ssl_params(),
                    })
                },
                |c| match c {
                    Command::AddProfile { name, params } => {
                        Some(Fields::new().arg(name.clone()).with_ssl_params(params))
                    }
                    _ => None,
                },
            ),
    );
    t.push(
        cmd(
            "set",
            "ssl profile",
            "Change a profile: every entity using it opens an epoch.",
        )
        .name("profile name")
        .ssl_params()
        .needs_flag()
        .rule(
            |f| {
                Ok(Command::SetProfile {
                    name: f.take_arg(0)?,
                    params: f.ssl_params(),
                })
            },
            |c| match c {
                Command::SetProfile { name, params } => Some(Fields::new().arg(name.clone()).with_ssl_params(params)),
                _ => None,
            },
        ),
    );
}
