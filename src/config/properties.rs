//! Round-trip properties of the language, on lines and models written from
//! the command table (`grammar::sample_line`):
//! - every command that parses prints as text that parses back to the same
//!   command, and that text is the command's fixed point;
//! - every model built by applying such lines saves as text that loads back
//!   into the same model (epochs aside: loading starts them over), and a
//!   line that fails to apply leaves the model as it was (R10).

#![cfg(test)]

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::apply::{FileBytes, FileKind, FileSource};
use super::grammar::{commands, parse_line, sample_line};
use super::load::load_text;
use super::model::Model;

/// Choices for `sample_line` from `bytes`, then zeros.
fn picker(bytes: &[u8]) -> impl FnMut(usize) -> usize + '_ {
    let mut at = 0;
    move |n| {
        let b = bytes.get(at).copied().unwrap_or(0);
        at += 1;
        usize::from(b) % n.max(1)
    }
}

/// Parse `line`; when it parses, check the printed text parses back to the
/// same command and prints the same. Returns whether it parsed.
fn check_round_trip(line: &str) -> Result<bool, TestCaseError> {
    let Ok(Some(cmd)) = parse_line(line) else {
        return Ok(false);
    };
    let printed = cmd.to_string();
    let again = parse_line(&printed);
    prop_assert_eq!(
        again.as_ref().ok().and_then(|c| c.as_ref()),
        Some(&cmd),
        "{} -> {}",
        line,
        printed
    );
    prop_assert_eq!(again.unwrap().unwrap().to_string(), printed);
    Ok(true)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_generated_command_prints_and_parses_back(choices in proptest::collection::vec(any::<u8>(), 0..48)) {
        let line = sample_line(&mut picker(&choices));
        check_round_trip(&line)?;
    }
}

#[test]
fn every_command_of_the_table_round_trips() {
    // xorshift choices, the first one fixed to each spec in turn.
    for (i, spec) in commands().iter().enumerate() {
        let mut parsed = 0;
        for seed in 1..=60u64 {
            let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut first = true;
            let mut pick = |n: usize| {
                if std::mem::take(&mut first) {
                    return i;
                }
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s as usize) % n.max(1)
            };
            let line = sample_line(&mut pick);
            if check_round_trip(&line).unwrap_or_else(|e| panic!("{e}")) {
                parsed += 1;
            }
        }
        assert!(
            parsed > 0,
            "no generated line of '{} {}' parses",
            spec.verb,
            spec.object
        );
    }
}

struct Pems {
    site_cert: String,
    site_key: String,
    ca_cert: String,
}

fn pems() -> &'static Pems {
    static P: OnceLock<Pems> = OnceLock::new();
    P.get_or_init(|| {
        let ca = crate::pki::Ca::new("property CA").expect("CA");
        let site = ca.issue(&["a.test"], 9).expect("leaf");
        Pems {
            site_cert: site.cert_pem,
            site_key: site.key_pem.to_string(),
            ca_cert: ca.cert_pem(),
        }
    })
}

/// The paths `sample_line` writes: `*.key` is the site's key, `c.crt` the
/// CA that issued the site's certificate, anything else that certificate.
struct SampleFiles;

impl FileSource for SampleFiles {
    fn read(&self, path: &Path, _: FileKind) -> Result<FileBytes, String> {
        let name = path.to_string_lossy();
        let p = pems();
        Ok(if name.ends_with(".key") {
            &p.site_key
        } else if name.ends_with("c.crt") {
            &p.ca_cert
        } else {
            &p.site_cert
        }
        .as_bytes()
        .to_vec()
        .into())
    }
}

/// One of each entity, named as `sample_line` names things, so that
/// generated lines find what they refer to.
const SEED: &str = "\
add ssl certKey a -cert a.pem -key /etc/ssl/b.key
add ssl certKey Ca-1 -cert \"dir name/c.crt\"
add ssl cipher web
add ssl profile b -sessTimeout 60
add service a 127.0.0.1 80 SSL_TCP
add serviceGroup b TCP
add lb vserver a SSL_TCP 127.0.0.1 443
add lb vserver web SSL_TCP 10.1.2.3 443
";

fn assert_same_model(a: &Model, b: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(&a.vservers, &b.vservers);
    prop_assert_eq!(&a.services, &b.services);
    prop_assert_eq!(&a.service_groups, &b.service_groups);
    prop_assert_eq!(&a.profiles, &b.profiles);
    prop_assert_eq!(&a.cipher_groups, &b.cipher_groups);
    prop_assert_eq!(a.certkeys.len(), b.certkeys.len());
    for (name, ck) in &a.certkeys {
        let other = b.certkeys.get(name);
        prop_assert!(other.is_some(), "certKey {} lost", name);
        let other = other.unwrap();
        prop_assert_eq!(
            (&ck.cert_path, &ck.key_path, &ck.linked_to),
            (&other.cert_path, &other.key_path, &other.linked_to)
        );
        prop_assert_eq!(&ck.material.certs, &other.material.certs);
    }
    prop_assert!(a.epochs.keys().eq(b.epochs.keys()), "entities with epochs differ");
    Ok(())
}

/// Applies each line that parses to the seeded model (a refused one must
/// leave it as it was), then checks that what `save` writes loads back
/// into the same model.
fn applied_lines_save_and_load(lines: impl IntoIterator<Item = String>) -> Result<(), TestCaseError> {
    let mut model = load_text(SEED, "seed", &SampleFiles).expect("the seed loads");
    for line in lines {
        if let Ok(Some(cmd)) = parse_line(&line) {
            if !cmd.is_query() {
                let before = super::save::snapshot(&model);
                if model.apply(&cmd, &SampleFiles).is_err() {
                    prop_assert_eq!(
                        super::save::snapshot(&model),
                        before,
                        "'{}' failed but changed the model",
                        cmd
                    );
                }
            }
        }
    }
    let saved = model.to_commands();
    let loaded = load_text(&saved, "saved", &SampleFiles);
    prop_assert!(
        loaded.is_ok(),
        "saved text does not load: {:?}\n{}",
        loaded.err(),
        saved
    );
    let loaded = loaded.unwrap();
    assert_same_model(&model, &loaded)?;
    prop_assert_eq!(loaded.to_commands(), saved);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_generated_model_saves_and_loads_back_and_refusals_change_nothing(choices in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let mut pick = picker(&choices);
        let lines: Vec<String> = (0..choices.len() / 10).map(|_| sample_line(&mut pick)).collect();
        applied_lines_save_and_load(lines)?;
    }
}

/// Models at the ends of the ranges, which random lines reach only rarely.
#[test]
fn models_at_the_ends_of_ranges_save_and_load_back() {
    let cases: &[&[&str]] = &[
        // A cipher without a priority after one at the last priority.
        &[
            "bind ssl vserver a -cipherName web -cipherPriority 1000",
            "bind ssl vserver a -cipherName TLS1.3-AES128-GCM-SHA256",
        ],
        &[
            "bind ssl vserver a -cipherName web -cipherPriority 999",
            "bind ssl vserver a -cipherName TLS1.3-AES128-GCM-SHA256",
            "bind ssl vserver a -cipherName TLS1.3-AES256-GCM-SHA384",
        ],
    ];
    for lines in cases {
        if let Err(e) = applied_lines_save_and_load(lines.iter().map(|l| l.to_string())) {
            panic!("{lines:?}: {e}");
        }
    }
}
