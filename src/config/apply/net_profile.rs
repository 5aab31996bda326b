//! Net profiles: add, set, and binding one to a back end.
//!
//! A net profile says how connections to a back end are made: today,
//! whether a PROXY protocol header goes first, and which version. Bound to
//! a vserver, it says whether a PROXY header from a load balancer in front
//! comes first, and from which source networks
//! (`-proxyProtocolTrustedNetworks`, required: a header accepted from
//! anyone lets anyone forge client addresses). It is a setting of the
//! entities bound to it, so a change is theirs: `set netProfile` opens an
//! epoch on every vserver, service and serviceGroup bound to it, and `set
//! lb vserver|service|serviceGroup X -netProfile N` on that entity (new
//! connections follow the new profile; established ones keep what they
//! did, R1). `add netProfile` opens none.

use std::collections::BTreeSet;

use super::{Change, ChangeKind::*, CommandError, CommandError::*};
use crate::config::model::*;

impl Model {
    /// Services and serviceGroups bound to net profile `name`.
    pub fn net_profile_users(&self, name: &str) -> BTreeSet<EntityRef> {
        let services = self
            .services
            .values()
            .filter(|s| s.net_profile.as_deref() == Some(name))
            .map(|s| EntityRef::new(EntityKind::Service, &s.name));
        let groups = self
            .service_groups
            .values()
            .filter(|g| g.net_profile.as_deref() == Some(name))
            .map(|g| EntityRef::new(EntityKind::ServiceGroup, &g.name));
        let vservers = self
            .vservers
            .values()
            .filter(|v| v.net_profile.as_deref() == Some(name))
            .map(|v| EntityRef::new(EntityKind::Vserver, &v.name));
        services.chain(groups).chain(vservers).collect()
    }

    /// Vserver `vserver` (of type `proto`) may be bound to net profile
    /// `name`: it exists and, if it accepts a PROXY header, says from whom.
    pub(super) fn check_vserver_net_profile(
        &self,
        vserver: &str,
        proto: BackendProto,
        name: Option<&str>,
    ) -> Result<(), CommandError> {
        let Some(name) = name else { return Ok(()) };
        let p = self
            .net_profiles
            .get(name)
            .ok_or_else(|| Unknown(format!("unknown netProfile {name}")))?;
        check_inbound(vserver, proto, name, &p.params)
    }

    /// The net profile a command names, which must exist.
    pub(super) fn check_net_profile(&self, name: Option<&String>) -> Result<(), CommandError> {
        match name {
            Some(n) if !self.net_profiles.contains_key(n) => Err(Unknown(format!("unknown netProfile {n}"))),
            _ => Ok(()),
        }
    }

    /// `add netProfile`.
    pub(super) fn add_net_profile(&mut self, name: &str, params: &NetParams) -> Result<Change, CommandError> {
        if self.net_profiles.contains_key(name) {
            return Err(Conflict(format!("netProfile {name} already exists")));
        }
        // Every setting is kept explicit, so `save` writes it and a later
        // change never has to go back to "not set".
        let params = NetParams {
            proxy_protocol: Some(params.proxy_protocol.unwrap_or(false)),
            proxy_protocol_version: Some(params.proxy_protocol_version.unwrap_or(ProxyProtocolVersion::V1)),
            trusted_networks: params.trusted_networks.clone(),
        };
        self.net_profiles.insert(
            name.to_string(),
            NetProfile {
                name: name.to_string(),
                params,
            },
        );
        Ok(Change::new(Add))
    }

    /// `set netProfile`.
    pub(super) fn set_net_profile(&mut self, name: &str, params: &NetParams) -> Result<Change, CommandError> {
        let p = self
            .net_profiles
            .get(name)
            .ok_or_else(|| Unknown(format!("unknown netProfile {name}")))?;
        let mut after = p.params.clone();
        after.overlay(params);
        if p.params == after {
            return Ok(Change::new(Plain));
        }
        let users = self.net_profile_users(name);
        for v in users.iter().filter(|e| e.kind == EntityKind::Vserver) {
            check_inbound(&v.name, self.vservers[&*v.name].proto, name, &after)?;
        }
        if let Some(p) = self.net_profiles.get_mut(name) {
            p.params = after;
        }
        Ok(self.ssl_change(users))
    }

    /// `set service|serviceGroup X -netProfile N`.
    pub(super) fn set_backend(&mut self, e: &EntityRef, net_profile: &Option<String>) -> Result<Change, CommandError> {
        self.check_net_profile(net_profile.as_ref())?;
        let slot = match e.kind {
            EntityKind::Service => self.services.get_mut(&*e.name).map(|s| &mut s.net_profile),
            EntityKind::ServiceGroup => self.service_groups.get_mut(&*e.name).map(|g| &mut g.net_profile),
            EntityKind::Vserver => None,
        }
        .ok_or_else(|| Unknown(format!("unknown {e}")))?;
        if net_profile.is_none() || *slot == *net_profile {
            return Ok(Change::new(Plain));
        }
        *slot = net_profile.clone();
        Ok(self.ssl_change([e.clone()]))
    }
}

/// A vserver bound to a profile that accepts PROXY headers: it lists the
/// networks it trusts, and the vserver terminates TLS.
fn check_inbound(vserver: &str, proto: BackendProto, name: &str, p: &NetParams) -> Result<(), CommandError> {
    if p.proxy_header().is_none() {
        return Ok(());
    }
    if p.trusted_networks.as_ref().is_none_or(|n| n.is_empty()) {
        return Err(Invalid(format!(
            "lb vserver {vserver}: netProfile {name} accepts a PROXY header but lists no -proxyProtocolTrustedNetworks: a header accepted from anyone lets anyone forge client addresses"
        )));
    }
    if proto == BackendProto::SslBridge {
        return Err(Invalid(format!(
            "lb vserver {vserver}: an SSL_BRIDGE vserver does not accept a PROXY header (netProfile {name})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn net_profile_changes_open_epochs_of_the_back_ends_bound_to_it() {
        let (fx, mut m) = setup();
        bumps(&mut m, &fx, "add netProfile np -proxyProtocol ENABLED", &[]);
        bumps(&mut m, &fx, "add netProfile other", &[]);
        ok(&mut m, &fx, "add service s2 127.0.0.1 9005 TCP -netProfile np");
        bumps(&mut m, &fx, "set service plain -netProfile np", &[s("plain")]);
        bumps(&mut m, &fx, "set serviceGroup g1 -netProfile np", &[g("g1")]);
        // Setting what is already there changes nothing.
        bumps(&mut m, &fx, "set serviceGroup g1 -netProfile np", &[]);
        bumps(&mut m, &fx, "set netProfile np -proxyProtocol ENABLED", &[]);
        // A change of the profile is a change of every back end bound to it, no other.
        bumps(
            &mut m,
            &fx,
            "set netProfile np -proxyProtocolVersion V2",
            &[s("plain"), s("s2"), g("g1")],
        );
        bumps(&mut m, &fx, "set netProfile other -proxyProtocol ENABLED", &[]);
        assert_eq!(
            m.net_profiles["np"].params.proxy_header(),
            Some(crate::config::model::ProxyProtocolVersion::V2)
        );
        assert_eq!(
            m.net_profiles["other"].params.proxy_header(),
            Some(crate::config::model::ProxyProtocolVersion::V1)
        );
    }

    #[test]
    fn a_vserver_accepts_a_proxy_header_only_from_listed_networks() {
        let (fx, mut m) = setup();
        ok(&mut m, &fx, "add netProfile open -proxyProtocol ENABLED");
        ok(
            &mut m,
            &fx,
            "add netProfile front -proxyProtocol ENABLED -proxyProtocolTrustedNetworks 10.0.0.0/8",
        );
        ok(&mut m, &fx, "add netProfile off");
        refused(
            &mut m,
            &fx,
            "set lb vserver v1 -netProfile open",
            "lists no -proxyProtocolTrustedNetworks",
        );
        refused(
            &mut m,
            &fx,
            "add lb vserver v9 SSL_TCP 127.0.0.1 9443 -netProfile open",
            "lists no -proxyProtocolTrustedNetworks",
        );
        refused(
            &mut m,
            &fx,
            "add lb vserver b9 SSL_BRIDGE 127.0.0.1 9444 -netProfile front",
            "SSL_BRIDGE vserver does not accept a PROXY header",
        );
        refused(
            &mut m,
            &fx,
            "set lb vserver v1 -netProfile nop",
            "unknown netProfile nop",
        );
        // A binding or a change of the bound profile opens an epoch of the vserver.
        bumps(&mut m, &fx, "set lb vserver v1 -netProfile off", &[v("v1")]);
        refused(
            &mut m,
            &fx,
            "set netProfile off -proxyProtocol ENABLED",
            "lists no -proxyProtocolTrustedNetworks",
        );
        bumps(&mut m, &fx, "set lb vserver v1 -netProfile front", &[v("v1")]);
        bumps(
            &mut m,
            &fx,
            "set netProfile front -proxyProtocolTrustedNetworks 192.0.2.0/24",
            &[v("v1")],
        );
        bumps(&mut m, &fx, "set lb vserver v1 -maxClients 5", &[]);
        refused(&mut m, &fx, "rm netProfile front", "vserver v1 uses it");
        let cidr = m.net_profiles["front"].params.trusted_networks.clone().unwrap();
        assert_eq!(cidr.len(), 1);
        assert!(cidr[0].contains("192.0.2.77".parse().unwrap()));
        assert!(cidr[0].contains("::ffff:192.0.2.77".parse().unwrap()));
        assert!(!cidr[0].contains("192.0.3.1".parse().unwrap()));
        assert!(!cidr[0].contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn validation_errors_change_nothing() {
        let (fx, mut m) = setup();
        ok(
            &mut m,
            &fx,
            "add netProfile np -proxyProtocol ENABLED -proxyProtocolVersion V2",
        );
        ok(&mut m, &fx, "set service s1 -netProfile np");
        refused(&mut m, &fx, "add netProfile np", "netProfile np already exists");
        refused(
            &mut m,
            &fx,
            "set netProfile nop -proxyProtocol ENABLED",
            "unknown netProfile nop",
        );
        refused(&mut m, &fx, "set service s1 -netProfile nop", "unknown netProfile nop");
        refused(
            &mut m,
            &fx,
            "set serviceGroup nog -netProfile np",
            "unknown serviceGroup nog",
        );
        refused(
            &mut m,
            &fx,
            "add service s9 127.0.0.1 9009 TCP -netProfile nop",
            "unknown netProfile nop",
        );
        refused(
            &mut m,
            &fx,
            "add serviceGroup g9 TCP -netProfile nop",
            "unknown netProfile nop",
        );
        refused(&mut m, &fx, "rm netProfile np", "service s1 uses it");
        refused(&mut m, &fx, "rm netProfile nop", "unknown netProfile nop");
    }
}
