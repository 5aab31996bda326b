//! Services and serviceGroups: add, and serviceGroup members.
//!
//! Epoch effect: none (a new entity starts at epoch 1; members are not TLS
//! settings: a removed member's connections are left to finish).

use std::net::SocketAddr;

use super::{take_first, Change, ChangeKind::*, CommandError, CommandError::*};
use crate::config::model::*;

impl Model {
    /// Whether `SSL_TCP` back end `e` verifies its server's certificate
    /// (`-serverAuth ENABLED`, on it or its profile); `None` when `e` is
    /// not an `SSL_TCP` service or serviceGroup.
    pub fn verifies_server(&self, e: &EntityRef) -> Option<bool> {
        let (proto, profile, params) = match e.kind {
            EntityKind::Service => self
                .services
                .get(&*e.name)
                .map(|s| (s.proto, &s.ssl_profile, &s.params))?,
            EntityKind::ServiceGroup => self
                .service_groups
                .get(&*e.name)
                .map(|g| (g.proto, &g.ssl_profile, &g.params))?,
            EntityKind::Vserver => return None,
        };
        if proto != BackendProto::SslTcp {
            return None;
        }
        let profile = profile.as_ref().and_then(|p| self.profiles.get(p)).map(|p| &p.params);
        Some(params.effective(profile).server_auth)
    }

    /// `SSL_TCP` services and serviceGroups that accept any server
    /// certificate (no `-serverAuth ENABLED`, the ADC's default too).
    pub fn unverified_backends(&self) -> Vec<EntityRef> {
        let services = self.services.keys().map(|n| EntityRef::new(EntityKind::Service, n));
        let groups = self
            .service_groups
            .keys()
            .map(|n| EntityRef::new(EntityKind::ServiceGroup, n));
        services
            .chain(groups)
            .filter(|e| self.verifies_server(e) == Some(false))
            .collect()
    }

    /// `add service`.
    pub(super) fn add_service(
        &mut self,
        name: &str,
        addr: &SocketAddr,
        proto: &BackendProto,
        health: &HealthFlags,
        net_profile: &Option<String>,
    ) -> Result<Change, CommandError> {
        self.backend_name_free(name)?;
        self.check_net_profile(net_profile.as_ref())?;
        if let Some(other) = self.services.values().find(|s| s.addr == *addr && s.proto == *proto) {
            return Err(Conflict(format!(
                "service {name}: {addr} {} is already service {}",
                proto.keyword(),
                other.name
            )));
        }
        self.services.insert(
            name.to_string(),
            Service {
                name: name.to_string(),
                addr: *addr,
                proto: *proto,
                enabled: true,
                health: *health,
                net_profile: net_profile.clone(),
                ssl_profile: None,
                params: SslParams::default(),
                bindings: SslBindings::default(),
            },
        );
        Ok(self.added(EntityRef::new(EntityKind::Service, name)))
    }

    /// `add serviceGroup`.
    pub(super) fn add_service_group(
        &mut self,
        name: &str,
        proto: &BackendProto,
        health: &HealthFlags,
        net_profile: &Option<String>,
    ) -> Result<Change, CommandError> {
        self.backend_name_free(name)?;
        self.check_net_profile(net_profile.as_ref())?;
        self.service_groups.insert(
            name.to_string(),
            ServiceGroup {
                name: name.to_string(),
                proto: *proto,
                enabled: true,
                members: vec![],
                health: *health,
                net_profile: net_profile.clone(),
                ssl_profile: None,
                params: SslParams::default(),
                bindings: SslBindings::default(),
            },
        );
        Ok(self.added(EntityRef::new(EntityKind::ServiceGroup, name)))
    }

    /// `bind serviceGroup G IP PORT`.
    pub(super) fn bind_member(&mut self, name: &str, addr: &SocketAddr) -> Result<Change, CommandError> {
        let group = self
            .service_groups
            .get_mut(name)
            .ok_or_else(|| Unknown(format!("unknown serviceGroup {name}")))?;
        if group.members.contains(addr) {
            return Err(Conflict(format!("{addr} is already a member of serviceGroup {name}")));
        }
        group.members.push(*addr);
        Ok(Change::new(Plain))
    }

    /// `unbind serviceGroup G IP PORT`.
    pub(super) fn unbind_member(&mut self, name: &str, addr: &SocketAddr) -> Result<Change, CommandError> {
        let group = self
            .service_groups
            .get_mut(name)
            .ok_or_else(|| Unknown(format!("unknown serviceGroup {name}")))?;
        if !take_first(&mut group.members, |m| m == addr) {
            return Err(Unknown(format!("{addr} is not a member of serviceGroup {name}")));
        }
        Ok(Change::new(Plain))
    }

    fn backend_name_free(&self, name: &str) -> Result<(), CommandError> {
        if self.services.contains_key(name) {
            Err(Conflict(format!("a service named {name} already exists")))
        } else if self.service_groups.contains_key(name) {
            Err(Conflict(format!("a serviceGroup named {name} already exists")))
        } else {
            Ok(())
        }
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
            "add service g1 127.0.0.1 1 TCP",
            "serviceGroup named g1 already exists",
        );
        refused(
            &mut m,
            &fx,
            "add serviceGroup s1 TCP",
            "service named s1 already exists",
        );
        refused(
            &mut m,
            &fx,
            "add service s9 127.0.0.1 9001 SSL_TCP",
            "already service s1",
        );
        refused(&mut m, &fx, "bind serviceGroup g1 127.0.0.1 9003", "already a member");
        refused(&mut m, &fx, "unbind serviceGroup g1 127.0.0.1 9999", "not a member");
        refused(
            &mut m,
            &fx,
            "bind serviceGroup nog 127.0.0.1 9003",
            "unknown serviceGroup nog",
        );
    }
}
