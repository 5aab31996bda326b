//! Cipher groups: add, bind, unbind and set their suites.
//!
//! Epoch effect: any change to a group's suites opens an epoch on every
//! entity bound to the group, front end and back end.

use super::{Change, ChangeKind::*, CommandError, CommandError::*};
use crate::config::model::*;

impl Model {
    /// `add ssl cipher`.
    pub(super) fn add_cipher_group(&mut self, name: &str) -> Result<Change, CommandError> {
        if self.cipher_groups.contains_key(name) {
            return Err(Conflict(format!("cipher group {name} already exists")));
        }
        if CipherSuiteName::from_adc(name).is_some() {
            return Err(Invalid(format!(
                "cipher group name {name} is the name of a cipher suite"
            )));
        }
        self.cipher_groups.insert(
            name.to_string(),
            CipherGroup {
                name: name.to_string(),
                suites: vec![],
            },
        );
        Ok(Change::new(Add))
    }

    /// `bind ssl cipher G -cipherName S`.
    pub(super) fn bind_cipher_group(&mut self, name: &str, suite: &CipherSuiteName) -> Result<Change, CommandError> {
        let group = self
            .cipher_groups
            .get_mut(name)
            .ok_or_else(|| Unknown(format!("unknown cipher group {name}")))?;
        if group.suites.contains(suite) {
            return Err(Conflict(format!(
                "cipher {} is already bound to cipher group {name}",
                suite.adc_name()
            )));
        }
        group.suites.push(*suite);
        self.cipher_group_changed(name)
    }

    /// `unbind ssl cipher G -cipherName S`.
    pub(super) fn unbind_cipher_group(&mut self, name: &str, suite: &CipherSuiteName) -> Result<Change, CommandError> {
        let group = self
            .cipher_groups
            .get_mut(name)
            .ok_or_else(|| Unknown(format!("unknown cipher group {name}")))?;
        let Some(i) = group.suites.iter().position(|s| s == suite) else {
            return Err(Unknown(format!(
                "cipher {} is not bound to cipher group {name}",
                suite.adc_name()
            )));
        };
        group.suites.remove(i);
        self.cipher_group_changed(name)
    }

    /// `set ssl cipher G -cipherName S1,S2,...`.
    pub(super) fn set_cipher_group(&mut self, name: &str, suites: &[CipherSuiteName]) -> Result<Change, CommandError> {
        let group = self
            .cipher_groups
            .get_mut(name)
            .ok_or_else(|| Unknown(format!("unknown cipher group {name}")))?;
        group.suites = suites.to_vec();
        self.cipher_group_changed(name)
    }

    fn cipher_group_changed(&mut self, name: &str) -> Result<Change, CommandError> {
        let users = self.cipher_group_users(name);
        Ok(self.ssl_change(users))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn validation_errors_change_nothing() {
        let (fx, mut m) = setup();
        refused(&mut m, &fx, "add ssl cipher grp", "cipher group grp already exists");
        refused(
            &mut m,
            &fx,
            "bind ssl cipher nog -cipherName TLS1.3-AES128-GCM-SHA256",
            "unknown cipher group nog",
        );
        refused(
            &mut m,
            &fx,
            "bind ssl cipher grp -cipherName TLS1.3-AES128-GCM-SHA256",
            "already bound",
        );
        refused(
            &mut m,
            &fx,
            "unbind ssl cipher grp -cipherName TLS1.3-AES256-GCM-SHA384",
            "is not bound",
        );
    }
}
