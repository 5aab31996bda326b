//! Vservers: add, limits, net profile and lb bindings.
//!
//! Epoch effect: a change of the net profile opens an epoch of the vserver
//! (the PROXY header it accepts is part of how a connection starts); the
//! rest open none (a new vserver starts at epoch 1; limits and lb bindings
//! are not TLS settings).
//!
//! An `SSL_BRIDGE` vserver passes TLS through: it binds only `SSL_BRIDGE`
//! services and serviceGroups, and an `SSL_TCP` vserver never binds them
//! (the back end would receive a second, unexpected TLS layer or none).

use std::net::SocketAddr;

use super::{Change, ChangeKind::*, CommandError, CommandError::*, DEFAULT_CLIENT_TIMEOUT};
use crate::config::model::*;

impl Model {
    /// `add lb vserver`; `-maxClients 0` means unlimited.
    pub(super) fn add_vserver(
        &mut self,
        name: &str,
        proto: BackendProto,
        addr: &SocketAddr,
        max_clients: &Option<u32>,
        client_timeout: &Option<u32>,
        net_profile: &Option<String>,
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
        self.check_vserver_net_profile(name, proto, net_profile.as_deref())?;
        self.vservers.insert(
            name.to_string(),
            Vserver {
                name: name.to_string(),
                proto,
                addr: *addr,
                enabled: true,
                max_clients: max_clients.filter(|m| *m != 0),
                client_timeout: client_timeout.unwrap_or(DEFAULT_CLIENT_TIMEOUT),
                ssl_profile: None,
                params: SslParams::default(),
                bindings: SslBindings::default(),
                targets: vec![],
                net_profile: net_profile.clone(),
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
        net_profile: &Option<String>,
    ) -> Result<Change, CommandError> {
        let proto = self
            .vservers
            .get(name)
            .ok_or_else(|| Unknown(format!("unknown lb vserver {name}")))?
            .proto;
        if net_profile.is_some() {
            self.check_vserver_net_profile(name, proto, net_profile.as_deref())?;
        }
        let v = self.vservers.get_mut(name).expect("checked above");
        if let Some(m) = max_clients {
            v.max_clients = Some(*m).filter(|m| *m != 0);
        }
        if let Some(t) = client_timeout {
            v.client_timeout = *t;
        }
        if net_profile.is_none() || v.net_profile == *net_profile {
            return Ok(Change::new(Plain));
        }
        v.net_profile = net_profile.clone();
        Ok(self.ssl_change([EntityRef::new(EntityKind::Vserver, name)]))
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
        let target_proto = self
            .services
            .get(target)
            .map(|s| s.proto)
            .or_else(|| self.service_groups.get(target).map(|g| g.proto));
        let bridged = |p: Option<BackendProto>| p == Some(BackendProto::SslBridge);
        if bridged(Some(v.proto)) != bridged(target_proto) {
            return Err(Invalid(format!(
                "bind lb vserver {name}: {target} is {}, lb vserver {name} is {}: an SSL_BRIDGE vserver binds only SSL_BRIDGE back ends, and only it does",
                target_proto.map_or("?", |p| p.keyword()),
                v.proto.keyword()
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

    #[test]
    fn ssl_bridge_vservers_bind_only_ssl_bridge_back_ends() {
        let (fx, mut m) = setup();
        ok(&mut m, &fx, "add lb vserver pt SSL_BRIDGE 127.0.0.1 8450");
        ok(&mut m, &fx, "add service b1 127.0.0.1 9101 SSL_BRIDGE");
        ok(&mut m, &fx, "add serviceGroup bg SSL_BRIDGE");
        ok(&mut m, &fx, "bind lb vserver pt b1");
        ok(&mut m, &fx, "bind lb vserver pt bg");
        refused(&mut m, &fx, "bind lb vserver pt s1", "only SSL_BRIDGE back ends");
        refused(&mut m, &fx, "bind lb vserver v1 b1", "only SSL_BRIDGE back ends");
        refused(
            &mut m,
            &fx,
            "bind ssl vserver pt -certkeyName site",
            "passes TLS through",
        );
        refused(
            &mut m,
            &fx,
            "bind ssl service b1 -certkeyName site",
            "SSL settings do not apply",
        );
        // Its handshake timeout bounds the ClientHello peek.
        ok(&mut m, &fx, "set ssl vserver pt -handshakeTimeout 3");
        let saved = m.to_commands();
        assert!(
            saved.contains("add lb vserver pt SSL_BRIDGE 127.0.0.1 8450\n"),
            "{saved}"
        );
        assert!(saved.contains("add service b1 127.0.0.1 9101 SSL_BRIDGE\n"), "{saved}");
        let shown = crate::config::show::show(
            &m,
            crate::config::ShowWhat::Object(crate::config::ObjectKind::Vserver),
            Some("pt"),
        )
        .unwrap();
        assert!(
            shown.starts_with("lb vserver pt SSL_BRIDGE 127.0.0.1:8450 UP"),
            "{shown}"
        );
    }
}
