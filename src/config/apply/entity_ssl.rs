//! The SSL settings of a vserver, service or serviceGroup: `set ssl`, and
//! `bind ssl` / `unbind ssl` of certKeys, ciphers and curves.
//!
//! Epoch effect: every change opens an epoch on that entity only, on its side.

use super::{describe_bind, take_first, Change, CommandError, CommandError::*};
use crate::config::command::SslBind;
use crate::config::model::*;

impl Model {
    /// `set ssl vserver|service|serviceGroup X [params] [-sslProfile P]`.
    pub(super) fn set_ssl(
        &mut self,
        entity: &EntityRef,
        params: &SslParams,
        profile: &Option<String>,
    ) -> Result<Change, CommandError> {
        if let Some(p) = profile {
            if !self.profiles.contains_key(p) {
                return Err(Unknown(format!("set ssl {entity}: unknown ssl profile {p}")));
            }
        }
        let (prof, own, _) = self.ssl_parts_mut(entity)?;
        own.overlay(params);
        if profile.is_some() {
            prof.clone_from(profile);
        }
        Ok(self.ssl_change([entity.clone()]))
    }

    /// `bind ssl ENTITY X ...`; a cipher without a priority goes after the others.
    pub(super) fn bind_ssl(&mut self, entity: &EntityRef, bind: &SslBind) -> Result<Change, CommandError> {
        if entity.kind == EntityKind::Vserver
            && self.vservers.get(&*entity.name).map(|v| v.proto) == Some(BackendProto::SslBridge)
        {
            return Err(Invalid(format!(
                "{entity} is SSL_BRIDGE: it passes TLS through and has no certificates, ciphers or curves of its own"
            )));
        }
        self.check_bind(entity, bind)?;
        let priority = match bind {
            SslBind::Cipher { priority: None, .. } => {
                let (_, _, b) = self.ssl_parts_mut(entity)?;
                let after = b
                    .ciphers
                    .iter()
                    .map(|c| c.priority)
                    .max()
                    .map_or(1, |m| m.saturating_add(1));
                if after > MAX_CIPHER_PRIORITY {
                    // Saved, it would read back as out of range.
                    return Err(Invalid(format!(
                        "cannot bind {} to {entity} after the others: priority {MAX_CIPHER_PRIORITY} is the last and is taken; give -cipherPriority N (1..={MAX_CIPHER_PRIORITY})",
                        describe_bind(bind)
                    )));
                }
                after
            }
            SslBind::Cipher { priority: Some(p), .. } => *p,
            _ => 0,
        };
        let (_, _, b) = self.ssl_parts_mut(entity)?;
        match bind {
            SslBind::CertKey { name, sni, ca } => b.certkeys.push(CertBinding {
                certkey: name.to_string(),
                sni: *sni,
                ca: *ca,
            }),
            SslBind::Cipher { cipher, .. } => b.ciphers.push(CipherBinding {
                cipher: cipher.clone(),
                priority,
            }),
            SslBind::Curve(c) => b.curves.push(*c),
        }
        Ok(self.ssl_change([entity.clone()]))
    }

    /// `unbind ssl ENTITY X ...`.
    pub(super) fn unbind_ssl(&mut self, entity: &EntityRef, bind: &SslBind) -> Result<Change, CommandError> {
        let (_, _, b) = self.ssl_parts_mut(entity)?;
        let removed = match bind {
            SslBind::CertKey { name, ca, .. } => take_first(&mut b.certkeys, |x| x.certkey == *name && x.ca == *ca),
            SslBind::Cipher { cipher, .. } => take_first(&mut b.ciphers, |x| x.cipher == *cipher),
            SslBind::Curve(c) => take_first(&mut b.curves, |x| x == c),
        };
        if !removed {
            return Err(Unknown(format!("{} is not bound to {entity}", describe_bind(bind))));
        }
        Ok(self.ssl_change([entity.clone()]))
    }

    fn check_bind(&self, entity: &EntityRef, bind: &SslBind) -> Result<(), CommandError> {
        if !self.entity_exists(entity) {
            return Err(Unknown(format!("unknown {entity}")));
        }
        let bindings = self
            .ssl_entities()
            .find(|(e, _)| e == entity)
            .map(|(_, v)| v.bindings)
            .ok_or_else(|| {
                let proto = match entity.kind {
                    EntityKind::Service => self.services.get(&*entity.name).map(|s| s.proto),
                    EntityKind::ServiceGroup => self.service_groups.get(&*entity.name).map(|g| g.proto),
                    EntityKind::Vserver => None,
                };
                let proto = proto.map_or("TCP", |p| p.keyword());
                Invalid(format!("{entity} uses {proto}, not SSL_TCP: SSL settings do not apply"))
            })?;
        match bind {
            SslBind::CertKey { name, sni, ca } => {
                let certkey = self.certkey(name)?;
                if bindings.certkeys.iter().any(|b| b.certkey == *name && b.ca == *ca) {
                    return Err(Conflict(format!("certKey {name} is already bound to {entity}")));
                }
                if !ca {
                    if certkey.material.key.is_none() {
                        return Err(Invalid(format!(
                            "certKey {name} has no key: it can be bound to {entity} only with -CA"
                        )));
                    }
                    if !sni {
                        if let Some(other) = bindings.certkeys.iter().find(|b| !b.ca && !b.sni) {
                            return Err(Conflict(format!(
                                "{entity} already has certKey {} as its certificate; unbind it first or bind {name} with -SNICert",
                                other.certkey
                            )));
                        }
                    }
                }
            }
            SslBind::Cipher { cipher, .. } => {
                if let CipherRef::Group(g) = cipher {
                    if !self.cipher_groups.contains_key(g) {
                        return Err(Unknown(format!("unknown cipher group or cipher suite {g}")));
                    }
                }
                if bindings.ciphers.iter().any(|b| b.cipher == *cipher) {
                    return Err(Conflict(format!(
                        "{} is already bound to {entity}",
                        describe_bind(bind)
                    )));
                }
            }
            SslBind::Curve(c) => {
                if bindings.curves.contains(c) {
                    return Err(Conflict(format!("curve {} is already bound to {entity}", c.adc_name())));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn cipher_priorities() {
        let (fx, mut m) = setup();
        ok(&mut m, &fx, "bind ssl vserver v1 -cipherName TLS1.3-AES256-GCM-SHA384");
        ok(&mut m, &fx, "bind ssl vserver v1 -cipherName grp -cipherPriority 7");
        ok(
            &mut m,
            &fx,
            "bind ssl vserver v1 -cipherName TLS1.3-CHACHA20-POLY1305-SHA256",
        );
        let pr: Vec<u32> = m.vservers["v1"].bindings.ciphers.iter().map(|c| c.priority).collect();
        assert_eq!(pr, [1, 7, 8]);
    }

    #[test]
    fn a_cipher_after_the_last_priority_is_refused() {
        let (fx, mut m) = setup();
        ok(&mut m, &fx, "bind ssl vserver v1 -cipherName grp -cipherPriority 1000");
        refused(
            &mut m,
            &fx,
            "bind ssl vserver v1 -cipherName TLS1.3-AES256-GCM-SHA384",
            "give -cipherPriority",
        );
        let e = m
            .apply(
                &cmd("bind ssl vserver v1 -cipherName TLS1.3-AES256-GCM-SHA384"),
                &fx.files(),
            )
            .expect_err("refused");
        assert!(matches!(e, super::CommandError::Invalid(_)), "{e:?}");
        // With a priority it binds, and what is saved loads back.
        ok(
            &mut m,
            &fx,
            "bind ssl vserver v1 -cipherName TLS1.3-AES256-GCM-SHA384 -cipherPriority 1000",
        );
        let saved = m.to_commands();
        let loaded = fx.model(&saved);
        assert_eq!(loaded.to_commands(), saved);
    }

    #[test]
    fn validation_errors_change_nothing() {
        let (fx, mut m) = setup();
        refused(&mut m, &fx, "set ssl vserver nov -tls12 ENABLED", "unknown vserver nov");
        refused(
            &mut m,
            &fx,
            "set ssl vserver v1 -sslProfile nop",
            "unknown ssl profile nop",
        );
        refused(
            &mut m,
            &fx,
            "set ssl service plain -tls12 ENABLED",
            "uses TCP, not SSL_TCP",
        );
        refused(
            &mut m,
            &fx,
            "bind ssl service plain -eccCurveName X25519",
            "uses TCP, not SSL_TCP",
        );
        refused(
            &mut m,
            &fx,
            "bind ssl vserver v1 -certkeyName nock",
            "unknown certKey nock",
        );
        refused(&mut m, &fx, "bind ssl vserver v1 -certkeyName ca", "has no key");
        refused(&mut m, &fx, "bind ssl vserver v1 -certkeyName a", "already bound");
        refused(
            &mut m,
            &fx,
            "bind ssl vserver v1 -certkeyName b",
            "already has certKey a",
        );
        refused(
            &mut m,
            &fx,
            "bind ssl vserver v1 -cipherName nog",
            "unknown cipher group or cipher suite nog",
        );
        refused(&mut m, &fx, "bind ssl vserver v2 -cipherName grp", "already bound");
        refused(
            &mut m,
            &fx,
            "unbind ssl vserver v1 -certkeyName b",
            "certKey b is not bound to vserver v1",
        );
        refused(&mut m, &fx, "unbind ssl vserver v1 -certkeyName a -CA", "is not bound");
        refused(
            &mut m,
            &fx,
            "unbind ssl vserver v1 -eccCurveName P_384",
            "curve P_384 is not bound",
        );
        // A CA certKey may be bound as -CA; key-less is fine then.
        ok(&mut m, &fx, "bind ssl vserver v1 -certkeyName ca -CA");
    }
}
