//! certKeys: add, update, link and unlink; reading and checking their files.
//!
//! Epoch effect: `update`, `link` and `unlink` open an epoch on every entity
//! that uses the certKey, directly or through a chain, front end and back
//! end. `add` opens none (nothing uses a new certKey yet).

use std::path::Path;
use std::sync::Arc;

use super::{Change, ChangeKind::*, CommandError, CommandError::*, FileKind, FileSource};
use crate::config::material::load_cert_key;
use crate::config::model::*;

/// Read and check a certKey's files: one policy for `add` and `update`,
/// and so for the config file at start-up, on SIGHUP and in `check`. A
/// certificate outside its validity period (expired, or not valid yet) is
/// refused; the message names the certKey, the file and the date.
fn load_material(
    name: &str,
    cert: &Path,
    key: Option<&Path>,
    files: &dyn FileSource,
) -> Result<CertKeyMaterial, CommandError> {
    let cert_pem = files
        .read(cert, FileKind::Certificate)
        .map_err(|e| File(format!("certKey {name}: {e}")))?;
    let key_pem = match key {
        Some(k) => Some(
            files
                .read(k, FileKind::PrivateKey)
                .map_err(|e| File(format!("certKey {name}: {e}")))?,
        ),
        None => None,
    };
    let cert_name = cert.display().to_string();
    let key_name = key.map(|k| k.display().to_string()).unwrap_or_default();
    load_cert_key(
        &cert_pem,
        &cert_name,
        key_pem.as_ref().map(|p| (p.as_slice(), key_name.as_str())),
    )
    .map_err(|e| Invalid(format!("certKey {name}: {e}")))
    .and_then(|m| within_validity(name, cert, m, std::time::SystemTime::now()))
}

/// `material` if `now` lies within its leaf's validity period.
fn within_validity(
    name: &str,
    cert: &Path,
    material: CertKeyMaterial,
    now: std::time::SystemTime,
) -> Result<CertKeyMaterial, CommandError> {
    use crate::config::material::rfc3339;
    if material.is_expired(now) {
        return Err(Invalid(format!(
            "certKey {name}: the certificate {} expired on {} (notAfter)",
            cert.display(),
            rfc3339(material.not_after)
        )));
    }
    if now < material.not_before {
        return Err(Invalid(format!(
            "certKey {name}: the certificate {} is not valid before {} (notBefore)",
            cert.display(),
            rfc3339(material.not_before)
        )));
    }
    Ok(material)
}

/// Whether `child`'s leaf was issued by `ca`'s leaf (issuer name equals subject name).
fn issued_by(child: &CertKeyMaterial, ca: &CertKeyMaterial) -> bool {
    use x509_parser::prelude::*;
    let (Some(c), Some(a)) = (child.certs.first(), ca.certs.first()) else {
        return false;
    };
    match (
        X509Certificate::from_der(c.as_ref()),
        X509Certificate::from_der(a.as_ref()),
    ) {
        (Ok((_, c)), Ok((_, a))) => c.issuer().as_raw() == a.subject().as_raw(),
        _ => false,
    }
}

impl Model {
    /// `add ssl certKey`.
    pub(super) fn add_certkey(
        &mut self,
        name: &str,
        cert: &Path,
        key: Option<&Path>,
        files: &dyn FileSource,
    ) -> Result<Change, CommandError> {
        if self.certkeys.contains_key(name) {
            return Err(Conflict(format!("certKey {name} already exists")));
        }
        let material = load_material(name, cert, key, files)?;
        self.certkeys.insert(
            name.to_string(),
            CertKey {
                name: name.to_string(),
                cert_path: cert.to_path_buf(),
                key_path: key.map(Path::to_path_buf),
                linked_to: None,
                material: Arc::new(material),
            },
        );
        Ok(Change::new(Add))
    }

    /// `update ssl certKey`: without `-key`, the current key path is kept.
    pub(super) fn update_certkey(
        &mut self,
        name: &str,
        cert: &Path,
        key: Option<&Path>,
        files: &dyn FileSource,
    ) -> Result<Change, CommandError> {
        let old = self.certkey(name)?;
        let key = key.map(Path::to_path_buf).or_else(|| old.key_path.clone());
        let material = load_material(name, cert, key.as_deref(), files).map_err(|e| match e {
            Invalid(why) => Invalid(format!("{why}; the running one is kept")),
            other => other,
        })?;
        if let Some(ca) = &old.linked_to {
            let ca_certkey = self.certkey(ca)?;
            if !issued_by(&material, &ca_certkey.material) {
                return Err(Invalid(format!(
                    "certKey {name}: the new certificate is not issued by {ca}, which it is linked to; unlink it first"
                )));
            }
        }
        for child in self.certkeys.values().filter(|c| c.linked_to.as_deref() == Some(name)) {
            if !issued_by(&child.material, &material) {
                return Err(Invalid(format!(
                    "certKey {name}: certKey {} is linked to it and is not issued by the new certificate",
                    child.name
                )));
            }
        }
        let users = self.certkey_users(name);
        if let Some(certkey) = self.certkeys.get_mut(name) {
            certkey.cert_path = cert.to_path_buf();
            certkey.key_path = key;
            certkey.material = Arc::new(material);
        }
        Ok(self.ssl_change(users))
    }

    /// `link ssl certKey`.
    pub(super) fn link_certkey(&mut self, name: &str, ca: &str) -> Result<Change, CommandError> {
        let certkey = self.certkey(name)?;
        let ca_certkey = self
            .certkey(ca)
            .map_err(|_| Unknown(format!("cannot link {name}: unknown CA certKey {ca}")))?;
        if let Some(cur) = &certkey.linked_to {
            return Err(Conflict(format!(
                "certKey {name} is already linked to {cur}; unlink it first"
            )));
        }
        if name == ca || self.chain_of(ca).contains(&name) {
            return Err(Invalid(format!(
                "cannot link {name} to {ca}: the chain would loop back to {name}"
            )));
        }
        if !issued_by(&certkey.material, &ca_certkey.material) {
            return Err(Invalid(format!(
                "cannot link {name} to {ca}: the certificate of {name} is not issued by {} (subject of {ca})",
                ca_certkey.material.subject
            )));
        }
        if let Some(certkey) = self.certkeys.get_mut(name) {
            certkey.linked_to = Some(ca.to_string());
        }
        let users = self.certkey_users(name);
        Ok(self.ssl_change(users))
    }

    /// `unlink ssl certKey`.
    pub(super) fn unlink_certkey(&mut self, name: &str) -> Result<Change, CommandError> {
        if self.certkey(name)?.linked_to.is_none() {
            return Err(Unknown(format!("certKey {name} is not linked")));
        }
        let users = self.certkey_users(name);
        if let Some(certkey) = self.certkeys.get_mut(name) {
            certkey.linked_to = None;
        }
        Ok(self.ssl_change(users))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use std::path::Path;

    #[test]
    fn links_are_checked() {
        let (fx, mut m) = setup();
        refused(&mut m, &fx, "link ssl certKey leaf nosuch", "unknown CA certKey nosuch");
        refused(&mut m, &fx, "link ssl certKey nosuch ca", "unknown certKey nosuch");
        refused(&mut m, &fx, "link ssl certKey leaf ca", "is not issued by");
        refused(&mut m, &fx, "link ssl certKey a a", "loop");
        refused(&mut m, &fx, "unlink ssl certKey leaf", "is not linked");
        ok(&mut m, &fx, "link ssl certKey leaf inter");
        ok(&mut m, &fx, "link ssl certKey inter ca");
        refused(&mut m, &fx, "link ssl certKey leaf inter", "already linked to inter");
        refused(&mut m, &fx, "link ssl certKey ca leaf", "loop");
        assert_eq!(m.chain_of("leaf"), ["leaf", "inter", "ca"]);
        // Updating a CA to a certificate that did not issue its children is refused.
        refused(
            &mut m,
            &fx,
            "update ssl certKey inter -cert a.crt",
            "not issued by ca, which it is linked to",
        );
        refused(
            &mut m,
            &fx,
            "update ssl certKey leaf -cert a.crt -key a.key",
            "not issued by inter",
        );
        ok(&mut m, &fx, "unlink ssl certKey inter");
        refused(
            &mut m,
            &fx,
            "update ssl certKey inter -cert a.crt",
            "certKey leaf is linked to it and is not issued by",
        );
    }

    #[test]
    fn update_rereads_files() {
        let (fx, mut m) = setup();
        let old = m.certkeys["a"].material.certs[0].clone();
        fx.leaf("a", "a2.test");
        ok(&mut m, &fx, "update ssl certKey a -cert a.crt");
        let certkey = &m.certkeys["a"];
        assert_ne!(certkey.material.certs[0], old);
        assert_eq!(certkey.material.dns_names, ["a2.test"]);
        assert_eq!(certkey.key_path.as_deref(), Some(Path::new("a.key")));
        // Unreadable new files: refused, old material kept.
        refused(&mut m, &fx, "update ssl certKey a -cert gone.crt", "cannot read");
        assert_eq!(m.certkeys["a"].material.dns_names, ["a2.test"]);
    }

    #[test]
    fn validation_errors_change_nothing() {
        let (fx, mut m) = setup();
        refused(
            &mut m,
            &fx,
            "add ssl certKey a -cert a.crt -key a.key",
            "certKey a already exists",
        );
        refused(
            &mut m,
            &fx,
            "add ssl certKey x -cert a.crt -key b.key",
            "does not match certificate",
        );
        refused(&mut m, &fx, "add ssl certKey x -cert nothere.crt", "cannot read");
        refused(&mut m, &fx, "add ssl certKey x -cert a.key", "no PEM certificate");
        refused(
            &mut m,
            &fx,
            "update ssl certKey a -cert b.crt",
            "does not match certificate",
        );
        refused(&mut m, &fx, "update ssl certKey zz -cert b.crt", "unknown certKey zz");
    }
}
