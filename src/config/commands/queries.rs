//! disable, enable, rm, save and show.

use super::{cmd, entity_object, ssl_object, ENTITY_KINDS, OBJECT_KINDS};
use crate::config::command::{Command, ShowWhat};
use crate::config::grammar::{CommandSpec, Fields};
use crate::config::model::EntityRef;

pub(super) fn state_and_query_commands(t: &mut Vec<CommandSpec>) {
    for kind in ENTITY_KINDS {
        for verb in ["disable", "enable"] {
            let help = if verb == "disable" {
                "Close every connection of the entity now and stop using it (R7)."
            } else {
                "Use the entity again, under a new epoch."
            };
            t.push(cmd(verb, entity_object(kind), help).name("name").rule(
                move |f| {
                    let e = EntityRef::new(kind, &f.take_arg::<String>(0)?);
                    Ok(if verb == "disable" {
                        Command::Disable(e)
                    } else {
                        Command::Enable(e)
                    })
                },
                move |c| match c {
                    Command::Disable(e) if verb == "disable" && e.kind == kind => {
                        Some(Fields::new().arg(e.name.to_string()))
                    }
                    Command::Enable(e) if verb == "enable" && e.kind == kind => {
                        Some(Fields::new().arg(e.name.to_string()))
                    }
                    _ => None,
                },
            ));
        }
    }
    for what in OBJECT_KINDS {
        t.push(
            cmd("rm", what.words(), "Remove an entity that nothing uses any more.")
                .name("name")
                .rule(
                    move |f| {
                        Ok(Command::Rm {
                            what,
                            name: f.take_arg(0)?,
                        })
                    },
                    move |c| match c {
                        Command::Rm { what: w, name } if *w == what => Some(Fields::new().arg(name.clone())),
                        _ => None,
                    },
                ),
        );
    }
    for (object, alias) in [("ns config", false), ("config", true)] {
        let s = cmd(
            "save",
            object,
            "Write the running configuration to its file, atomically.",
        );
        let s = if alias { s.alias() } else { s };
        t.push(s.rule(|_| Ok(Command::Save), |c| matches!(c, Command::Save).then(Fields::new)));
    }
    let mut shows: Vec<(ShowWhat, &'static str, &'static str)> = vec![
        (ShowWhat::Stats, "stats", "Counters of every shard, entity and epoch."),
        (
            ShowWhat::RunningConfig,
            "ns runningConfig",
            "The running configuration, as save writes it.",
        ),
        (ShowWhat::Help, "help", "This list."),
    ];
    for what in OBJECT_KINDS {
        shows.push((ShowWhat::Object(what), what.words(), "One entity, or all of its kind."));
    }
    for kind in ENTITY_KINDS {
        shows.push((
            ShowWhat::Ssl(kind),
            ssl_object(kind),
            "An entity's effective SSL settings and bindings.",
        ));
    }
    for (what, object, help) in shows {
        let named = matches!(what, ShowWhat::Object(_) | ShowWhat::Ssl(_));
        let s = cmd("show", object, help);
        let s = if named { s.opt_name() } else { s };
        t.push(s.rule(
            move |f| {
                Ok(Command::Show {
                    what,
                    name: if named { f.take_opt_arg(0)? } else { None },
                })
            },
            move |c| match c {
                Command::Show { what: w, name } if *w == what => Some(if named {
                    Fields::new().opt_arg(name.clone())
                } else {
                    Fields::new()
                }),
                _ => None,
            },
        ));
    }
}
