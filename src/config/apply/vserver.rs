//! Vservers: add, limits and lb bindings.
//!
//! Epoch effect: none of these open an epoch (a new vserver starts at
//! epoch 1; limits and lb bindings are not TLS settings).

use std::net::SocketAddr;

use super::{Change, ChangeKind::*, CommandError, CommandError::*, DEFAULT_CLIENT_TIMEOUT};
use crate::config::model::*;

impl Model {
    /// `add lb vserver`; `-maxClients 0` means unlimited.
    pub(super) fn add_vserver(
        &mut self,
        name: &str,
        addr: &SocketAddr,
        max_clients: &Option<u32>,
        client_timeout: &Option<u32>,
    ) -> Result<Change, CommandError> {
        if self.vservers.contains_key(name) {
            return Err(Conflict(format!("lb vserver {name} already exists")));
        }
        if let Some(other) = self.vservers.values().find(|v| v.addr == *addr) {
            return Err(Conflict(format!(
                "lb vserver {name}: address {addr} is already used by lb vserver {}",
                other.name
            )));
        }
        self.vservers.insert(
            name.to_string(),
            Vserver {
                name: name.to_string(),
                addr: *addr,
                enabled: true,
                max_clients: max_clients.filter(|m| *m != 0),
                client_timeout: client_timeout.unwrap_or(DEFAULT_CLIENT_TIMEOUT),
                ssl_profile: None,
                params: SslParams::default(),
                bindings: SslBindings::default(),
                targets: vec![],
            },
        );
        Ok(self.added(EntityRef::new(EntityKind::Vserver, name)))
    }

    /// `set lb vserver`.
    pub(super) fn set_lb_vserver(
        &mut self,
        name: &str,
        max_clients: &Option<u32>,
        client_timeout: &Option<u32>,
    ) -> Result<Change, CommandError> {
        let v = self
            .vservers
            .get_mut(name)
            .ok_or_else(|| Unknown(format!("unknown lb vserver {name}")))?;
        if let Some(m) = max_clients {
            v.max_clients = Some(*m).filter(|m| *m != 0);
        }
        if let Some(t) = client_timeout {
            v.client_timeout = *t;
        }
        Ok(Change::new(Plain))
    }

    /// `bind lb vserver V TARGET`.
    pub(super) fn bind_lb_vserver(&mut self, name: &str, target: &str) -> Result<Change, CommandError> {
        let v = self
            .vservers
            .get(name)
            .ok_or_else(|| Unknown(format!("unknown lb vserver {name}")))?;
        if !self.services.contains_key(target) && !self.service_groups.contains_key(target) {
            return Err(Unknown(format!(
                "bind lb vserver {name}: no service or serviceGroup named {target}"
            )));
        }
        if v.targets.iter().any(|t| t == target) {
            return Err(Conflict(format!("{target} is already bound to lb vserver {name}")));
        }
        if let Some(v) = self.vservers.get_mut(name) {
            v.targets.push(target.to_string());
        }
        Ok(Change::new(Plain))
    }

    /// `unbind lb vserver V TARGET`.
    pub(super) fn unbind_lb_vserver(&mut self, name: &str, target: &str) -> Result<Change, CommandError> {
        let v = self
            .vservers
            .get_mut(name)
            .ok_or_else(|| Unknown(format!("unknown lb vserver {name}")))?;
        let Some(i) = v.targets.iter().position(|t| t == target) else {
            return Err(Unknown(format!("{target} is not bound to lb vserver {name}")));
        };
        v.targets.remove(i);
        Ok(Change::new(Plain))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn validation_errors_change_nothing() {
        let (fx, mut m) = setup();
        refused(
            &mut m,
            &fx,
            "add lb vserver v1 SSL_TCP 127.0.0.1 1",
            "lb vserver v1 already exists",
        );
        refused(
            &mut m,
            &fx,
            "add lb vserver v9 SSL_TCP 127.0.0.1 8441",
            "already used by lb vserver v1",
        );
        refused(
            &mut m,
            &fx,
            "bind lb vserver v1 nos",
            "no service or serviceGroup named nos",
        );
        refused(&mut m, &fx, "bind lb vserver v1 s1", "already bound");
        refused(&mut m, &fx, "unbind lb vserver v1 g1", "not bound");
    }
}
