//! SSL profiles: add and set.
//!
//! Epoch effect: `set ssl profile` opens an epoch on every entity using the
//! profile, on the side it is used. `add` opens none.

use super::{Change, ChangeKind::*, CommandError, CommandError::*};
use crate::config::model::*;

impl Model {
    /// `add ssl profile`.
    pub(super) fn add_profile(&mut self, name: &str, params: &SslParams) -> Result<Change, CommandError> {
        if self.profiles.contains_key(name) {
            return Err(Conflict(format!("ssl profile {name} already exists")));
        }
        self.profiles.insert(
            name.to_string(),
            SslProfile {
                name: name.to_string(),
                params: params.clone(),
            },
        );
        Ok(Change::new(Add))
    }

    /// `set ssl profile`.
    pub(super) fn set_profile(&mut self, name: &str, params: &SslParams) -> Result<Change, CommandError> {
        let p = self
            .profiles
            .get_mut(name)
            .ok_or_else(|| Unknown(format!("unknown ssl profile {name}")))?;
        p.params.overlay(params);
        let users = self.profile_users(name);
        Ok(self.ssl_change(users))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn validation_errors_change_nothing() {
        let (fx, mut m) = setup();
        refused(&mut m, &fx, "add ssl profile fe", "ssl profile fe already exists");
        refused(
            &mut m,
            &fx,
            "set ssl profile nop -tls12 ENABLED",
            "unknown ssl profile nop",
        );
    }
}
