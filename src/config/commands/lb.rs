//! Vserver, service and serviceGroup commands (addresses, limits, members, health).

use super::cmd;
use super::flags::*;
use crate::config::command::Command;
use crate::config::grammar::{CommandSpec, Fields};
use crate::config::model::{EntityKind, EntityRef, HealthFlags, NetParams};
use crate::config::values::ValueType::{BackendProto, Ip, Name, Port, VserverProto};

pub(super) fn vserver_and_backend_commands(t: &mut Vec<CommandSpec>) {
    t.push(
        cmd("add", "lb vserver", "Add a TLS or TLS-passthrough vserver.")
            .name("name")
            .arg("SSL_TCP|SSL_BRIDGE", "service type SSL_TCP or SSL_BRIDGE", VserverProto)
            .arg("IP", "IP address", Ip)
            .arg("PORT", "port", Port)
            .flag(&MAX_CLIENTS)
            .flag(&CLIENT_TIMEOUT)
            .flag(&VSERVER_NET_PROFILE)
            .rule(
                |f| {
                    let name = f.take_arg(0)?;
                    let proto = f.take_arg(1)?;
                    let (ip, port) = (f.take_arg(2)?, f.take_arg(3)?);
                    Ok(Command::AddVserver {
                        name,
                        proto,
                        addr: std::net::SocketAddr::new(ip, port),
                        max_clients: f.take(&MAX_CLIENTS),
                        client_timeout: f.take(&CLIENT_TIMEOUT),
                        net_profile: f.take(&VSERVER_NET_PROFILE),
                    })
                },
                |c| match c {
                    Command::AddVserver {
                        name,
                        proto,
                        addr,
                        max_clients,
                        client_timeout,
                        net_profile,
                    } => Some(
                        Fields::new()
                            .arg(name.clone())
                            .arg(*proto)
                            .arg(addr.ip())
                            .arg(addr.port())
                            .opt_flag(&MAX_CLIENTS, *max_clients)
                            .opt_flag(&CLIENT_TIMEOUT, *client_timeout)
                            .opt_flag(&VSERVER_NET_PROFILE, net_profile.clone()),
                    ),
                    _ => None,
                },
            ),
    );
    t.push(
        cmd(
            "set",
            "lb vserver",
            "Change a vserver's limits (no epoch opens) or its net profile (opens an epoch of it).",
        )
        .name("vserver name")
        .flag(&MAX_CLIENTS)
        .flag(&CLIENT_TIMEOUT)
        .flag(&VSERVER_NET_PROFILE)
        .needs_flag()
        .rule(
            |f| {
                Ok(Command::SetLbVserver {
                    name: f.take_arg(0)?,
                    max_clients: f.take(&MAX_CLIENTS),
                    client_timeout: f.take(&CLIENT_TIMEOUT),
                    net_profile: f.take(&VSERVER_NET_PROFILE),
                })
            },
            |c| match c {
                Command::SetLbVserver {
                    name,
                    max_clients,
                    client_timeout,
                    net_profile,
                } => Some(
                    Fields::new()
                        .arg(name.clone())
                        .opt_flag(&MAX_CLIENTS, *max_clients)
                        .opt_flag(&CLIENT_TIMEOUT, *client_timeout)
                        .opt_flag(&VSERVER_NET_PROFILE, net_profile.clone()),
                ),
                _ => None,
            },
        ),
    );
    for verb in ["bind", "unbind"] {
        let help = if verb == "bind" {
            "Send a vserver's connections to a service or serviceGroup (no epoch opens)."
        } else {
            "Stop sending a vserver's new connections to a service or serviceGroup."
        };
        t.push(
            cmd(verb, "lb vserver", help)
                .name("vserver name")
                .arg("TARGET", "service or serviceGroup name", Name)
                .rule(
                    move |f| {
                        let (name, target) = (f.take_arg(0)?, f.take_arg(1)?);
                        Ok(if verb == "bind" {
                            Command::BindLbVserver { name, target }
                        } else {
                            Command::UnbindLbVserver { name, target }
                        })
                    },
                    move |c| match c {
                        Command::BindLbVserver { name, target } if verb == "bind" => {
                            Some(Fields::new().arg(name.clone()).arg(target.clone()))
                        }
                        Command::UnbindLbVserver { name, target } if verb == "unbind" => {
                            Some(Fields::new().arg(name.clone()).arg(target.clone()))
                        }
                        _ => None,
                    },
                ),
        );
    }
    // `add service S IP PORT PROTO` as documented, or the ADC's own `IP PROTO PORT`.
    for adc_order in [false, true] {
        let mut s = cmd("add", "service", "Add a back-end server.")
            .name("name")
            .arg("IP", "IP address", Ip);
        s = if adc_order {
            s.arg(
                "TCP|SSL_TCP|SSL_BRIDGE",
                "protocol TCP, SSL_TCP or SSL_BRIDGE",
                BackendProto,
            )
            .arg("PORT", "port", Port)
            .alias()
        } else {
            s.arg("PORT", "port", Port).arg(
                "TCP|SSL_TCP|SSL_BRIDGE",
                "protocol TCP, SSL_TCP or SSL_BRIDGE",
                BackendProto,
            )
        };
        let (port_at, proto_at) = if adc_order { (3, 2) } else { (2, 3) };
        t.push(s.flag(&HEALTH_INTERVAL).flag(&HEALTH_RETRIES).flag(&NET_PROFILE).rule(
            move |f| {
                let name = f.take_arg(0)?;
                let ip = f.take_arg(1)?;
                let port = f.take_arg(port_at)?;
                Ok(Command::AddService {
                    name,
                    addr: std::net::SocketAddr::new(ip, port),
                    proto: f.take_arg(proto_at)?,
                    health: health(f),
                    net_profile: f.take(&NET_PROFILE),
                })
            },
            |c| {
                match c {
                    Command::AddService {
                        name,
                        addr,
                        proto,
                        health,
                        net_profile,
                    } => Some(
                        with_health(
                            Fields::new()
                                .arg(name.clone())
                                .arg(addr.ip())
                                .arg(addr.port())
                                .arg(*proto),
                            health,
                        )
                        .opt_flag(&NET_PROFILE, net_profile.clone()),
                    ),
                    _ => None,
                }
            },
        ));
    }
    t.push(
        cmd(
            "add",
            "serviceGroup",
            "Add a group of back-end servers (members are bound to it).",
        )
        .name("name")
        .arg(
            "TCP|SSL_TCP|SSL_BRIDGE",
            "protocol TCP, SSL_TCP or SSL_BRIDGE",
            BackendProto,
        )
        .flag(&HEALTH_INTERVAL)
        .flag(&HEALTH_RETRIES)
        .flag(&NET_PROFILE)
        .rule(
            |f| {
                Ok(Command::AddServiceGroup {
                    name: f.take_arg(0)?,
                    proto: f.take_arg(1)?,
                    health: health(f),
                    net_profile: f.take(&NET_PROFILE),
                })
            },
            |c| match c {
                Command::AddServiceGroup {
                    name,
                    proto,
                    health,
                    net_profile,
                } => Some(
                    with_health(Fields::new().arg(name.clone()).arg(*proto), health)
                        .opt_flag(&NET_PROFILE, net_profile.clone()),
                ),
                _ => None,
            },
        ),
    );
    for kind in [EntityKind::Service, EntityKind::ServiceGroup] {
        t.push(
            cmd(
                "set",
                super::entity_object(kind),
                "Bind a net profile to a back end (opens an epoch of that back end).",
            )
            .name("name")
            .flag(&NET_PROFILE)
            .needs_flag()
            .rule(
                move |f| {
                    Ok(Command::SetBackend {
                        entity: EntityRef::new(kind, &f.take_arg::<String>(0)?),
                        net_profile: f.take(&NET_PROFILE),
                    })
                },
                move |c| match c {
                    Command::SetBackend { entity, net_profile } if entity.kind == kind => Some(
                        Fields::new()
                            .arg(entity.name.to_string())
                            .opt_flag(&NET_PROFILE, net_profile.clone()),
                    ),
                    _ => None,
                },
            ),
        );
    }
    for verb in ["bind", "unbind"] {
        let help = if verb == "bind" {
            "Add a member to a serviceGroup."
        } else {
            "Remove a member from a serviceGroup."
        };
        t.push(
            cmd(verb, "serviceGroup", help)
                .name("serviceGroup name")
                .arg("IP", "IP address", Ip)
                .arg("PORT", "port", Port)
                .rule(
                    move |f| {
                        let name = f.take_arg(0)?;
                        let addr = std::net::SocketAddr::new(f.take_arg(1)?, f.take_arg(2)?);
                        Ok(if verb == "bind" {
                            Command::BindServiceGroupMember { name, addr }
                        } else {
                            Command::UnbindServiceGroupMember { name, addr }
                        })
                    },
                    move |c| match c {
                        Command::BindServiceGroupMember { name, addr } if verb == "bind" => {
                            Some(Fields::new().arg(name.clone()).arg(addr.ip()).arg(addr.port()))
                        }
                        Command::UnbindServiceGroupMember { name, addr } if verb == "unbind" => {
                            Some(Fields::new().arg(name.clone()).arg(addr.ip()).arg(addr.port()))
                        }
                        _ => None,
                    },
                ),
        );
    }
}

fn health(f: &mut Fields) -> HealthFlags {
    HealthFlags {
        interval: f.take(&HEALTH_INTERVAL),
        retries: f.take(&HEALTH_RETRIES),
    }
}

fn with_health(fields: Fields, h: &HealthFlags) -> Fields {
    fields
        .opt_flag(&HEALTH_INTERVAL, h.interval)
        .opt_flag(&HEALTH_RETRIES, h.retries)
}

/// `add netProfile` and `set netProfile`.
pub(super) fn net_profile_commands(t: &mut Vec<CommandSpec>) {
    for verb in ["add", "set"] {
        let help = if verb == "add" {
            "Add a net profile: how a back end bound to it is connected, what a vserver bound to it accepts (PROXY header)."
        } else {
            "Change a net profile: every vserver and back end bound to it opens an epoch."
        };
        let s = cmd(verb, "netProfile", help)
            .name("net profile name")
            .flag(&PROXY_PROTOCOL)
            .flag(&PROXY_PROTOCOL_VERSION)
            .flag(&PROXY_PROTOCOL_TRUSTED_NETWORKS);
        let s = if verb == "set" { s.needs_flag() } else { s };
        t.push(s.rule(
            move |f| {
                let name = f.take_arg(0)?;
                let params = NetParams {
                    proxy_protocol: f.take(&PROXY_PROTOCOL),
                    proxy_protocol_version: f.take(&PROXY_PROTOCOL_VERSION),
                    trusted_networks: f.take(&PROXY_PROTOCOL_TRUSTED_NETWORKS),
                };
                Ok(if verb == "add" {
                    Command::AddNetProfile { name, params }
                } else {
                    Command::SetNetProfile { name, params }
                })
            },
            move |c| {
                let (name, params) = match c {
                    Command::AddNetProfile { name, params } if verb == "add" => (name, params),
                    Command::SetNetProfile { name, params } if verb == "set" => (name, params),
                    _ => return None,
                };
                Some(
                    Fields::new()
                        .arg(name.clone())
                        .opt_flag(&PROXY_PROTOCOL, params.proxy_protocol)
                        .opt_flag(&PROXY_PROTOCOL_VERSION, params.proxy_protocol_version)
                        .opt_flag(&PROXY_PROTOCOL_TRUSTED_NETWORKS, params.trusted_networks.clone()),
                )
            },
        ));
    }
}
