//! Writes a [`Model`] back as commands, and saves text to disk atomically.
//!
//! [`Model::to_commands`] emits commands in dependency order so that the
//! output, parsed and applied to an empty model, rebuilds the same model
//! (epochs aside: a reload starts every entity at epoch 1). Paths are
//! written as they were given. Key material is never written, only paths.
//! [`save_atomically`] replaces a file so that a reader sees the old text
//! or the new text, never a truncated mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::apply::DEFAULT_CLIENT_TIMEOUT;
use super::command::{Command, SslBind};
use super::model::*;

impl Model {
    /// The model as commands, one per line, in an order that applies cleanly.
    pub fn to_commands(&self) -> String {
        let mut out = String::from("# shardtls configuration\n");
        for c in self.commands() {
            out.push_str(&c.to_string());
            out.push('\n');
        }
        out
    }

    /// The model as a list of commands, in an order that applies cleanly to
    /// an empty model: certKeys, links, cipher groups, profiles, net profiles, services,
    /// serviceGroups and members, vservers, SSL settings, SSL bindings, lb
    /// bindings, and last the disables.
    pub fn commands(&self) -> Vec<Command> {
        let mut out = Vec::new();
        for ck in self.certkeys.values() {
            out.push(Command::AddCertKey {
                name: ck.name.clone(),
                cert: ck.cert_path.clone(),
                key: ck.key_path.clone(),
            });
        }
        for ck in self.certkeys.values() {
            if let Some(ca) = &ck.linked_to {
                out.push(Command::LinkCertKey {
                    name: ck.name.clone(),
                    ca: ca.clone(),
                });
            }
        }
        for g in self.cipher_groups.values() {
            out.push(Command::AddCipherGroup { name: g.name.clone() });
            for s in &g.suites {
                out.push(Command::BindCipherGroup {
                    name: g.name.clone(),
                    suite: *s,
                });
            }
        }
        for p in self.profiles.values() {
            out.push(Command::AddProfile {
                name: p.name.clone(),
                params: p.params.clone(),
            });
        }
        for p in self.net_profiles.values() {
            out.push(Command::AddNetProfile {
                name: p.name.clone(),
                params: p.params.clone(),
            });
        }
        for s in self.services.values() {
            out.push(Command::AddService {
                name: s.name.clone(),
                addr: s.addr,
                proto: s.proto,
                health: s.health,
                net_profile: s.net_profile.clone(),
            });
        }
        for g in self.service_groups.values() {
            out.push(Command::AddServiceGroup {
                name: g.name.clone(),
                proto: g.proto,
                health: g.health,
                net_profile: g.net_profile.clone(),
            });
            for m in &g.members {
                out.push(Command::BindServiceGroupMember {
                    name: g.name.clone(),
                    addr: *m,
                });
            }
        }
        for v in self.vservers.values() {
            out.push(Command::AddVserver {
                name: v.name.clone(),
                proto: v.proto,
                addr: v.addr,
                max_clients: v.max_clients,
                client_timeout: Some(v.client_timeout).filter(|t| *t != DEFAULT_CLIENT_TIMEOUT),
                net_profile: v.net_profile.clone(),
            });
        }
        let ssl: Vec<(EntityRef, &Option<String>, &SslParams, &SslBindings)> = self
            .vservers
            .values()
            .map(|v| {
                (
                    EntityRef::new(EntityKind::Vserver, &v.name),
                    &v.ssl_profile,
                    &v.params,
                    &v.bindings,
                )
            })
            .chain(self.services.values().map(|s| {
                (
                    EntityRef::new(EntityKind::Service, &s.name),
                    &s.ssl_profile,
                    &s.params,
                    &s.bindings,
                )
            }))
            .chain(self.service_groups.values().map(|g| {
                (
                    EntityRef::new(EntityKind::ServiceGroup, &g.name),
                    &g.ssl_profile,
                    &g.params,
                    &g.bindings,
                )
            }))
            .collect();
        for (e, profile, params, _) in &ssl {
            if profile.is_some() || **params != SslParams::default() {
                out.push(Command::SetSsl {
                    entity: e.clone(),
                    params: (*params).clone(),
                    profile: (*profile).clone(),
                });
            }
        }
        for (e, _, _, b) in &ssl {
            out.extend(binding_commands(e, b));
        }
        for v in self.vservers.values() {
            for t in &v.targets {
                out.push(Command::BindLbVserver {
                    name: v.name.clone(),
                    target: t.clone(),
                });
            }
        }
        let disabled = self
            .vservers
            .values()
            .filter(|v| !v.enabled)
            .map(|v| EntityRef::new(EntityKind::Vserver, &v.name))
            .chain(
                self.services
                    .values()
                    .filter(|s| !s.enabled)
                    .map(|s| EntityRef::new(EntityKind::Service, &s.name)),
            )
            .chain(
                self.service_groups
                    .values()
                    .filter(|g| !g.enabled)
                    .map(|g| EntityRef::new(EntityKind::ServiceGroup, &g.name)),
            );
        out.extend(disabled.map(Command::Disable));
        out
    }
}

/// `bind ssl` commands recreating `b` on `e`, in binding order.
pub(crate) fn binding_commands(e: &EntityRef, b: &SslBindings) -> Vec<Command> {
    let certs = b.certkeys.iter().map(|c| SslBind::CertKey {
        name: c.certkey.clone(),
        sni: c.sni,
        ca: c.ca,
    });
    let ciphers = b.ciphers.iter().map(|c| SslBind::Cipher {
        cipher: c.cipher.clone(),
        priority: Some(c.priority),
    });
    let curves = b.curves.iter().map(|c| SslBind::Curve(*c));
    certs
        .chain(ciphers)
        .chain(curves)
        .map(|bind| Command::BindSsl {
            entity: e.clone(),
            bind,
        })
        .collect()
}

/// Replace the file at `path` with `text` atomically: write a temporary
/// file in the same folder, fsync it, rename it over `path`, fsync the
/// folder. On any failure the old file is left as it was and the
/// temporary file is removed.
///
/// A `path` that is a symlink stays one: the file it leads to is replaced,
/// in that file's folder. The new file keeps the old one's mode, owner and
/// group (set on the temporary file's descriptor before the rename); a
/// file saved for the first time is 0600.
///
/// An error is the OS's as it came, without the path: the caller says
/// which file it was saving.
pub fn save_atomically(path: &Path, text: &str) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let target = match fs::canonicalize(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(path).is_err() => path.to_path_buf(),
        Err(e) => return Err(e),
    };
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        if let Ok(old) = fs::metadata(&target) {
            let new = f.metadata()?;
            if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
                std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid()))?;
            }
            f.set_permissions(old.permissions())?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &target)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// Everything observable about a model, for tests comparing before and after.
#[cfg(test)]
pub(crate) fn snapshot(m: &Model) -> String {
    format!("{}{:?}", m.to_commands(), m.epochs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::{load_file, parse_text};
    use crate::config::testutil::Fixture;

    const FULL: &str = "\
add ssl certKey a -cert a.crt -key a.key
add ssl certKey \"b cert\" -cert \"b dir/b.crt\" -key \"b dir/b.key\"
add ssl certKey ca -cert ca.crt
add ssl certKey inter -cert inter.crt
add ssl certKey leaf -cert leaf.crt -key leaf.key
link ssl certKey leaf inter
link ssl certKey inter ca
add ssl cipher grp
bind ssl cipher grp -cipherName TLS1.3-AES256-GCM-SHA384
bind ssl cipher grp -cipherName TLS1.3-AES128-GCM-SHA256
add ssl cipher empty
add ssl profile fe -tls12 DISABLED -sessTimeout 600 -alpnProtocols h2,http/1.1 -denySSLReneg ALL -drainTimeout 5
add ssl profile be
add service s1 127.0.0.1 9001 SSL_TCP
add service s2 ::1 9002 TCP
add serviceGroup g1 SSL_TCP
bind serviceGroup g1 127.0.0.1 9003
bind serviceGroup g1 127.0.0.2 9003
add lb vserver v1 SSL_TCP 127.0.0.1 8441 -maxClients 100 -cltTimeout 60
add lb vserver v2 SSL_TCP 127.0.0.1 8442
set ssl vserver v1 -sslProfile fe -SNIEnable -clientAuth ENABLED -clientCert OPTIONAL
set ssl service s1 -serverAuth ENABLED -commonName back.test -sslProfile be
set ssl serviceGroup g1 -strictSessionCleanup DISABLED -handshakeTimeout 3
bind ssl vserver v1 -certkeyName a
bind ssl vserver v1 -certkeyName \"b cert\" -SNICert
bind ssl vserver v1 -certkeyName ca -CA
bind ssl vserver v1 -cipherName grp -cipherPriority 5
bind ssl vserver v1 -cipherName TLS1.3-CHACHA20-POLY1305-SHA256
bind ssl vserver v1 -eccCurveName P_384
bind ssl vserver v1 -eccCurveName X25519
bind ssl vserver v2 -certkeyName leaf
bind ssl service s1 -certkeyName ca -CA
bind ssl service s1 -certkeyName a
bind ssl serviceGroup g1 -cipherName grp
bind lb vserver v1 s1
bind lb vserver v1 g1
bind lb vserver v2 s2
disable lb vserver v2
disable service s2
";

    fn full_fixture() -> Fixture {
        let mut fx = Fixture::new();
        fx.leaf("a", "a.test");
        std::fs::create_dir(fx.path().join("b dir")).unwrap();
        fx.leaf("b dir/b", "b.test");
        fx.ca("ca", None);
        fx.ca("inter", Some("ca"));
        fx.signed_leaf("leaf", "leaf.test", "inter");
        fx
    }

    #[test]
    fn round_trip() {
        let fx = full_fixture();
        let path = fx.write("ns.conf", FULL.as_bytes());
        let m = load_file(&path).unwrap_or_else(|e| panic!("{e:?}"));
        let text = m.to_commands();
        assert!(!text.contains("PRIVATE KEY"));
        let again = fx.model(&text);
        assert_eq!(again.to_commands(), text);
        // Same typed content, entity by entity.
        assert_eq!(again.vservers, m.vservers);
        assert_eq!(again.services, m.services);
        assert_eq!(again.service_groups, m.service_groups);
        assert_eq!(again.profiles, m.profiles);
        assert_eq!(again.cipher_groups, m.cipher_groups);
        assert_eq!(again.epochs, m.epochs);
        for (n, ck) in &m.certkeys {
            let ck2 = &again.certkeys[n];
            assert_eq!(
                (&ck2.cert_path, &ck2.key_path, &ck2.linked_to),
                (&ck.cert_path, &ck.key_path, &ck.linked_to)
            );
            assert_eq!(ck2.material.certs, ck.material.certs);
        }
        // Spot checks of what was written.
        assert!(
            text.contains("add ssl certKey \"b cert\" -cert \"b dir/b.crt\" -key \"b dir/b.key\"\n"),
            "{text}"
        );
        assert!(text.contains("add lb vserver v1 SSL_TCP 127.0.0.1 8441 -maxClients 100 -cltTimeout 60\n"));
        assert!(text.contains("add lb vserver v2 SSL_TCP 127.0.0.1 8442\n"));
        assert!(text.contains("bind ssl vserver v1 -cipherName TLS1.3-CHACHA20-POLY1305-SHA256 -cipherPriority 6\n"));
        assert!(text.trim_end().ends_with("disable service s2"));
        assert_eq!(parse_text(&text, "x").unwrap().len(), FULL.lines().count());
    }

    #[test]
    fn empty_model() {
        let m = Model::default();
        assert_eq!(m.to_commands(), "# shardtls configuration\n");
    }

    #[test]
    fn atomic_save_replaces_whole_file() {
        let fx = Fixture::new();
        let path = fx.path().join("ns.conf");
        save_atomically(&path, "first\n").unwrap();
        save_atomically(&path, "second\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second\n");
        let names: Vec<_> = fs::read_dir(fx.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ns.conf"], "no temporary file left behind");
    }

    #[test]
    fn atomic_save_failure_keeps_old_file() {
        let fx = Fixture::new();
        // Missing folder: fails, nothing created.
        assert!(save_atomically(&fx.path().join("no/dir/ns.conf"), "x").is_err());
        // Rename over a non-empty directory fails after the temp file is written.
        let target = fx.path().join("isdir");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), "old").unwrap();
        let e = save_atomically(&target, "new").unwrap_err();
        // The OS error alone: the caller names the path.
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR), "{e}");
        assert_eq!(fs::read_to_string(target.join("keep")).unwrap(), "old");
        let names: Vec<_> = fs::read_dir(fx.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["isdir"], "temporary file removed");
        // Read-only folder (not meaningful as root, which ignores permissions).
        if unsafe { libc::geteuid() } != 0 {
            use std::os::unix::fs::PermissionsExt;
            let ro = fx.path().join("ro");
            fs::create_dir(&ro).unwrap();
            let file = ro.join("ns.conf");
            fs::write(&file, "old config\n").unwrap();
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
            assert!(save_atomically(&file, "new config\n").is_err());
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(fs::read_to_string(&file).unwrap(), "old config\n");
        }
    }

    #[test]
    fn save_through_a_symlink_writes_its_target_and_keeps_owner_and_mode() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let fx = Fixture::new();
        let real_dir = fx.path().join("real");
        fs::create_dir(&real_dir).unwrap();
        let target = real_dir.join("ns.conf");
        fs::write(&target, "old\n").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
        let before = fs::metadata(&target).unwrap();
        let link = fx.path().join("ns.conf");
        std::os::unix::fs::symlink("real/ns.conf", &link).unwrap();
        save_atomically(&link, "new\n").unwrap();
        assert!(
            fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
            "the link was replaced"
        );
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("real/ns.conf"));
        assert_eq!(fs::read_to_string(&target).unwrap(), "new\n");
        let after = fs::metadata(&target).unwrap();
        assert_eq!(after.permissions().mode() & 0o7777, 0o640);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        let left: Vec<_> = fs::read_dir(&real_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["ns.conf"], "no temporary file left behind");
        // A link to nowhere: refused, nothing written.
        let dangling = fx.path().join("dangling.conf");
        std::os::unix::fs::symlink("nowhere/ns.conf", &dangling).unwrap();
        assert!(save_atomically(&dangling, "x").is_err());
        assert!(fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink());
    }
}
