//! Removal rules (`rm`) and the state commands (`disable`, `enable`).
//!
//! `rm` of anything still bound or in use is refused, naming what uses it.
//! Removing an entity forgets its epochs; `disable` closes its connections
//! (R7) without opening an epoch, `enable` opens one.

use super::{Change, ChangeKind, ChangeKind::*, CommandError, CommandError::*};
use crate::config::command::ObjectKind;
use crate::config::model::*;

impl Model {
    /// `disable` (`on` false) or `enable` (`on` true) of a connection-owning entity.
    pub(super) fn set_enabled(&mut self, e: &EntityRef, on: bool) -> Result<Change, CommandError> {
        let enabled = match e.kind {
            EntityKind::Vserver => self.vservers.get_mut(&*e.name).map(|v| &mut v.enabled),
            EntityKind::Service => self.services.get_mut(&*e.name).map(|s| &mut s.enabled),
            EntityKind::ServiceGroup => self.service_groups.get_mut(&*e.name).map(|g| &mut g.enabled),
        }
        .ok_or_else(|| Unknown(format!("unknown {e}")))?;
        let was = std::mem::replace(enabled, on);
        let mut change = Change::new(if on { Enable } else { Disable });
        // Enabling or disabling again is accepted and changes nothing.
        if was != on {
            if on {
                change.enabled.push(e.clone());
                change.bumped = self.bump([e.clone()]);
            } else {
                change.disabled.push(e.clone());
            }
        }
        Ok(change)
    }

    /// `rm`: refused while anything uses the object.
    pub(super) fn remove(&mut self, what: ObjectKind, name: &str) -> Result<Change, CommandError> {
        let in_use = |by: &str| Conflict(format!("cannot remove {} {name}: {by}", what.words()));
        match what {
            ObjectKind::CertKey => {
                self.certkey(name)?;
                if let Some((e, _)) = self
                    .ssl_entities()
                    .find(|(_, v)| v.bindings.certkeys.iter().any(|b| b.certkey == name))
                {
                    return Err(in_use(&format!("it is bound to {e}; unbind it first")));
                }
                if let Some(child) = self.certkeys.values().find(|c| c.linked_to.as_deref() == Some(name)) {
                    return Err(in_use(&format!(
                        "certKey {} is linked to it; unlink that first",
                        child.name
                    )));
                }
                self.certkeys.remove(name);
            }
            ObjectKind::CipherGroup => {
                if !self.cipher_groups.contains_key(name) {
                    return Err(Unknown(format!("unknown cipher group {name}")));
                }
                if let Some(e) = self.cipher_group_users(name).into_iter().next() {
                    return Err(in_use(&format!("it is bound to {e}; unbind it first")));
                }
                self.cipher_groups.remove(name);
            }
            ObjectKind::Profile => {
                if !self.profiles.contains_key(name) {
                    return Err(Unknown(format!("unknown ssl profile {name}")));
                }
                if let Some(e) = self.profile_users(name).into_iter().next() {
                    return Err(in_use(&format!("{e} uses it")));
                }
                self.profiles.remove(name);
            }
            ObjectKind::NetProfile => {
                if !self.net_profiles.contains_key(name) {
                    return Err(Unknown(format!("unknown netProfile {name}")));
                }
                if let Some(e) = self.net_profile_users(name).into_iter().next() {
                    return Err(in_use(&format!("{e} uses it")));
                }
                self.net_profiles.remove(name);
            }
            ObjectKind::Vserver | ObjectKind::Service | ObjectKind::ServiceGroup => {
                let kind = what.entity_kind().unwrap_or(EntityKind::Vserver);
                let e = EntityRef::new(kind, name);
                if !self.entity_exists(&e) {
                    return Err(Unknown(format!("unknown {e}")));
                }
                if kind != EntityKind::Vserver {
                    if let Some(v) = self.lb_users(name).first() {
                        return Err(in_use(&format!("it is bound to lb vserver {v}; unbind it first")));
                    }
                }
                match kind {
                    EntityKind::Vserver => self.vservers.remove(name).map(|_| ()),
                    EntityKind::Service => self.services.remove(name).map(|_| ()),
                    EntityKind::ServiceGroup => self.service_groups.remove(name).map(|_| ()),
                };
                self.epochs.remove(&e);
                let mut change = Change::new(ChangeKind::Remove);
                change.removed.push(e);
                return Ok(change);
            }
        }
        Ok(Change::new(ChangeKind::Remove))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::ChangeKind;

    #[test]
    fn disable_and_enable() {
        let (fx, mut m) = setup();
        let change = ok(&mut m, &fx, "disable lb vserver v1");
        assert_eq!(
            (change.kind, change.disabled.clone(), change.bumped.clone()),
            (ChangeKind::Disable, vec![v("v1")], vec![])
        );
        assert!(!m.vservers["v1"].enabled);
        let again = ok(&mut m, &fx, "disable lb vserver v1");
        assert!(again.disabled.is_empty());
        let e1 = m.epochs[&v("v1")];
        let change = ok(&mut m, &fx, "enable lb vserver v1");
        assert_eq!(
            (change.enabled.clone(), change.bumped.clone()),
            (vec![v("v1")], vec![v("v1")])
        );
        assert_eq!(m.epochs[&v("v1")], e1 + 1);
        assert!(ok(&mut m, &fx, "enable lb vserver v1").bumped.is_empty());
        ok(&mut m, &fx, "disable service s1");
        ok(&mut m, &fx, "disable serviceGroup g1");
        assert!(!m.services["s1"].enabled && !m.service_groups["g1"].enabled);
        refused(&mut m, &fx, "enable service nosuch", "unknown service nosuch");
    }

    #[test]
    fn rm_in_use_is_refused_then_allowed() {
        let (fx, mut m) = setup();
        refused(
            &mut m,
            &fx,
            "rm ssl certKey a",
            "cannot remove ssl certKey a: it is bound to vserver v1",
        );
        refused(&mut m, &fx, "rm ssl cipher grp", "it is bound to");
        refused(&mut m, &fx, "rm ssl profile fe", "vserver v1 uses it");
        refused(&mut m, &fx, "rm service s1", "bound to lb vserver v1");
        refused(&mut m, &fx, "rm serviceGroup g1", "bound to lb vserver v2");
        ok(&mut m, &fx, "link ssl certKey leaf inter");
        refused(&mut m, &fx, "rm ssl certKey inter", "certKey leaf is linked to it");
        refused(&mut m, &fx, "rm ssl certKey nosuch", "unknown certKey nosuch");

        ok(&mut m, &fx, "unbind ssl vserver v1 -certkeyName a");
        ok(&mut m, &fx, "rm ssl certKey a");
        ok(&mut m, &fx, "set ssl vserver v1 -sslProfile be");
        ok(&mut m, &fx, "rm ssl profile fe");
        ok(&mut m, &fx, "unbind lb vserver v1 s1");
        let change = ok(&mut m, &fx, "rm service s1");
        assert_eq!(
            (change.kind, change.removed.clone()),
            (ChangeKind::Remove, vec![s("s1")])
        );
        assert!(!m.epochs.contains_key(&s("s1")));
        let change = ok(&mut m, &fx, "rm lb vserver v2");
        assert_eq!(change.removed, [v("v2")]);
        ok(&mut m, &fx, "rm serviceGroup g1");
        ok(&mut m, &fx, "rm ssl cipher grp");
    }
}
