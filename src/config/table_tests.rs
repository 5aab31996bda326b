//! Checks of the command table itself: unambiguous objects, unique flags,
//! help and the fuzz dictionary generated from it.

#![cfg(test)]

use super::command::*;
use super::grammar::{commands, fuzz_dictionary, help_text, parse_line};

#[test]
fn no_object_is_a_prefix_of_another_for_the_same_verb() {
    for a in commands() {
        for b in commands() {
            if std::ptr::eq(a, b) || a.verb != b.verb || a.object == b.object {
                continue;
            }
            let prefix = format!("{} ", a.object.to_ascii_lowercase());
            assert!(
                !b.object.to_ascii_lowercase().starts_with(&prefix),
                "{} {} is a prefix of {} {}",
                a.verb,
                a.object,
                b.verb,
                b.object
            );
        }
    }
}

#[test]
fn flags_are_unique_per_command_and_optional_args_come_last() {
    for s in commands() {
        let mut names: Vec<String> = s.flags.iter().map(|(f, _)| f.name.to_ascii_lowercase()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "{} {}: a flag twice", s.verb, s.object);
        let first_optional = s.args.iter().position(|a| a.optional).unwrap_or(s.args.len());
        assert!(
            s.args[first_optional..].iter().all(|a| a.optional),
            "{} {}",
            s.verb,
            s.object
        );
    }
}

#[test]
fn help_lists_every_command_and_flag() {
    let help = help_text();
    for s in commands().iter().filter(|s| !s.alias) {
        assert!(
            help.contains(&format!("  {} {}", s.verb, s.object)),
            "{} {}",
            s.verb,
            s.object
        );
        for (f, _) in &s.flags {
            assert!(help.contains(&format!("  {}", f.name)), "{}", f.name);
        }
    }
    assert!(
        help.contains("-sessTimeout N (1..=604800); default 300; both sides"),
        "{help}"
    );
    assert!(help.contains("-commonName HOST; default none; back end"), "{help}");
    assert_eq!(
        p("show help"),
        Command::Show {
            what: ShowWhat::Help,
            name: None
        }
    );
}

/// `fuzz/config_line.dict` is generated from the table; regenerate it
/// with `SHARDTLS_WRITE_DICT=1 cargo test --lib fuzz_dictionary`.
#[test]
fn fuzz_dictionary_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/config_line.dict");
    let want = fuzz_dictionary();
    if std::env::var_os("SHARDTLS_WRITE_DICT").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(have, want, "{} is stale: see this test's doc", path.display());
}

fn p(line: &str) -> Command {
    parse_line(line).unwrap().unwrap()
}
