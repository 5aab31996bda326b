//! `set ssl`, `bind ssl` and `unbind ssl` on vservers, services and serviceGroups.

use super::flags::*;
use super::{cmd, ssl_object};
use crate::config::command::{Command, SslBind};
use crate::config::grammar::{CommandSpec, Fields};
use crate::config::model::{CipherRef, EntityKind, EntityRef};

pub(super) fn ssl_entity_commands(t: &mut Vec<CommandSpec>, kind: EntityKind) {
    t.push(
        cmd(
            "set",
            ssl_object(kind),
            "Change the entity's SSL parameters or profile: it opens an epoch.",
        )
        .name(match kind {
            EntityKind::Vserver => "vserver name",
            EntityKind::Service => "service name",
            EntityKind::ServiceGroup => "serviceGroup name",
        })
        .ssl_params()
        .flag(&SSL_PROFILE)
        .needs_flag()
        .rule(
            move |f| {
                let name: String = f.take_arg(0)?;
                Ok(Command::SetSsl {
                    entity: EntityRef::new(kind, &name),
                    params: f.ssl_params(),
                    profile: f.take(&SSL_PROFILE),
                })
            },
            move |c| match c {
                Command::SetSsl {
                    entity,
                    params,
                    profile,
                } if entity.kind == kind => Some(
                    Fields::new()
                        .arg(entity.name.to_string())
                        .with_ssl_params(params)
                        .opt_flag(&SSL_PROFILE, profile.clone()),
                ),
                _ => None,
            },
        ),
    );
    for verb in ["bind", "unbind"] {
        let help = if verb == "bind" {
            "Bind one certKey, cipher or curve to the entity: it opens an epoch."
        } else {
            "Unbind one certKey, cipher or curve from the entity: it opens an epoch."
        };
        t.push(
            cmd(verb, ssl_object(kind), help)
                .name("name")
                .flag(&CERTKEY_NAME)
                .flag(&SNI_CERT)
                .flag(&CA)
                .flag(&CIPHER_REF)
                .flag(&CIPHER_PRIORITY)
                .flag(&ECC_CURVE)
                .rule(
                    move |f| {
                        let name: String = f.take_arg(0)?;
                        let entity = EntityRef::new(kind, &name);
                        let bind = ssl_bind(f, &entity, verb)?;
                        Ok(if verb == "bind" {
                            Command::BindSsl { entity, bind }
                        } else {
                            Command::UnbindSsl { entity, bind }
                        })
                    },
                    move |c| match c {
                        Command::BindSsl { entity, bind } if verb == "bind" && entity.kind == kind => {
                            Some(bind_fields(entity, bind))
                        }
                        Command::UnbindSsl { entity, bind } if verb == "unbind" && entity.kind == kind => {
                            Some(bind_fields(entity, bind))
                        }
                        _ => None,
                    },
                ),
        );
    }
}

/// The one binding a `bind ssl` / `unbind ssl` line names.
fn ssl_bind(f: &mut Fields, entity: &EntityRef, verb: &str) -> Result<SslBind, String> {
    let certkey: Option<String> = f.take(&CERTKEY_NAME);
    let (sni, ca) = (f.present(&SNI_CERT), f.present(&CA));
    let cipher: Option<CipherRef> = f.take(&CIPHER_REF);
    let priority: Option<u32> = f.take(&CIPHER_PRIORITY);
    let curve = f.take(&ECC_CURVE);
    let on = format!("{verb} ssl {entity}");
    let n = certkey.is_some() as u8 + cipher.is_some() as u8 + curve.is_some() as u8;
    if n != 1 {
        return Err(format!(
            "{on}: give exactly one of -certkeyName, -cipherName, -eccCurveName"
        ));
    }
    if (sni || ca) && certkey.is_none() {
        return Err(format!("{on}: -SNICert and -CA go with -certkeyName"));
    }
    if priority.is_some() && cipher.is_none() {
        return Err(format!("{on}: -cipherPriority goes with -cipherName"));
    }
    if sni && ca {
        return Err(format!("{on}: a certKey is either -SNICert or -CA, not both"));
    }
    if sni && entity.kind != EntityKind::Vserver {
        return Err(format!("{on}: -SNICert applies to vservers only"));
    }
    match (certkey, cipher, curve) {
        (Some(name), _, _) => Ok(SslBind::CertKey { name, sni, ca }),
        (_, Some(cipher), _) => Ok(SslBind::Cipher { cipher, priority }),
        (_, _, Some(curve)) => Ok(SslBind::Curve(curve)),
        _ => Err(format!(
            "{on}: give exactly one of -certkeyName, -cipherName, -eccCurveName"
        )),
    }
}

fn bind_fields(entity: &EntityRef, bind: &SslBind) -> Fields {
    let f = Fields::new().arg(entity.name.to_string());
    match bind {
        SslBind::CertKey { name, sni, ca } => f.flag(&CERTKEY_NAME, name.clone()).bare(&SNI_CERT, *sni).bare(&CA, *ca),
        SslBind::Cipher { cipher, priority } => f
            .flag(&CIPHER_REF, cipher.clone())
            .opt_flag(&CIPHER_PRIORITY, *priority),
        SslBind::Curve(c) => f.flag(&ECC_CURVE, *c),
    }
}
