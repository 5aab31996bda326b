//! Certificate and key material, loaded from PEM and checked.
//!
//! It lives with the configuration because the model holds it: `config`
//! depends on rustls' certificate types and the ring signer only, and
//! `tls` (which builds configurations from the model) depends on `config`,
//! never the other way.
//!
//! This is where a certKey's files become rustls objects: the certificate
//! chain as DER, the private key as a ring-backed signing key, the names the
//! certificate covers (for SNI selection) and its validity window. Loading
//! fails with a reason a person can act on; it never panics on bad input.
//!
//! The private key's DER is kept in a [`SecretKeyDer`], zeroed when the
//! last reference goes; the PEM text it came from is the caller's, in a
//! buffer of its own that is zeroed too (see `apply::files`). The signing
//! keys ring builds from it are ring's: ring does not zero them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::SigningKey;
use zeroize::Zeroizing;

/// A private key as DER, zeroed when dropped.
pub type SecretKeyDer = Zeroizing<PrivateKeyDer<'static>>;

/// Why certificate or key material was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaterialError {
    #[error("no PEM certificate found in {0}")]
    NoCertificate(String),
    #[error("no PEM private key found in {0}")]
    NoKey(String),
    #[error("malformed PEM in {file}: {reason}")]
    BadPem { file: String, reason: String },
    #[error("certificate in {0} cannot be parsed")]
    BadCertificate(String),
    #[error("unsupported or malformed private key in {0}")]
    BadKey(String),
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch { cert: String, key: String },
}

/// One certKey's parsed material. Cheap to share: everything is behind `Arc`.
#[derive(Clone)]
pub struct CertKeyMaterial {
    /// Certificates of the cert file, leaf first. Chains built with `link`
    /// are assembled at snapshot time, not here.
    pub certs: Arc<Vec<CertificateDer<'static>>>,
    /// The signing key, when the certKey has one (a CA-only certKey has none).
    pub key: Option<Arc<dyn SigningKey>>,
    /// The key as read, so each shard can parse a signing key of its own
    /// (no reference count shared between cores on a handshake).
    pub key_der: Option<Arc<SecretKeyDer>>,
    /// DNS names (subjectAltName, else CN) of the leaf, lower case.
    pub dns_names: Vec<String>,
    /// Subject of the leaf, for `show`.
    pub subject: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for CertKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints key material.
        f.debug_struct("CertKeyMaterial")
            .field("subject", &self.subject)
            .field("dns_names", &self.dns_names)
            .field("certs", &self.certs.len())
            .field("has_key", &self.key.is_some())
            .finish()
    }
}

impl CertKeyMaterial {
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now > self.not_after
    }

    /// Whether the leaf certificate covers `sni` (exact or single-label wildcard).
    pub fn matches_name(&self, sni: &str) -> bool {
        let sni = sni.to_ascii_lowercase();
        self.dns_names.iter().any(|n| {
            if let Some(suffix) = n.strip_prefix("*.") {
                sni.split_once('.').is_some_and(|(_, rest)| rest == suffix)
            } else {
                *n == sni
            }
        })
    }
}

/// The civil (proleptic Gregorian) date of `days` since 1970-01-01, as
/// (year, month, day) (H. Hinnant's algorithm). No allocation: the access
/// log formats its times with it on the shard.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month as u32, day as u32)
}

/// `t` as an RFC 3339 date and time in UTC, to the second
/// (`2020-01-01T00:00:00Z`); times before 1970 print as 1970.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parse PEM certificate text (and optionally PEM key text) into material.
/// `cert_name` and `key_name` are used in error messages only.
pub fn load_cert_key(
    cert_pem: &[u8],
    cert_name: &str,
    key_pem: Option<(&[u8], &str)>,
) -> Result<CertKeyMaterial, MaterialError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| MaterialError::BadPem {
            file: cert_name.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(MaterialError::NoCertificate(cert_name.to_string()));
    }
    let (subject, dns_names, not_before, not_after) =
        describe(&certs[0]).ok_or_else(|| MaterialError::BadCertificate(cert_name.to_string()))?;

    let mut key_der = None;
    let key = match key_pem {
        None => None,
        Some((pem, key_name)) => {
            let der: SecretKeyDer = match PrivateKeyDer::from_pem_slice(pem) {
                Ok(der) => Zeroizing::new(der),
                Err(pem::Error::NoItemsFound) => return Err(MaterialError::NoKey(key_name.to_string())),
                Err(e) => {
                    return Err(MaterialError::BadPem {
                        file: key_name.to_string(),
                        reason: e.to_string(),
                    })
                }
            };
            let key =
                provider::sign::any_supported_type(&der).map_err(|_| MaterialError::BadKey(key_name.to_string()))?;
            let ck = rustls::sign::CertifiedKey::new(certs.clone(), key.clone());
            if ck.keys_match().is_err() {
                return Err(MaterialError::KeyMismatch {
                    cert: cert_name.to_string(),
                    key: key_name.to_string(),
                });
            }
            key_der = Some(Arc::new(der));
            Some(key)
        }
    };
    Ok(CertKeyMaterial {
        certs: Arc::new(certs),
        key,
        key_der,
        dns_names,
        subject,
        not_before,
        not_after,
    })
}

fn describe(cert: &CertificateDer<'_>) -> Option<(String, Vec<String>, SystemTime, SystemTime)> {
    use x509_parser::prelude::*;
    let (_, x) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for gn in &san.value.general_names {
            if let GeneralName::DNSName(n) = gn {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in x.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    let to_sys = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    Some((
        x.subject().to_string(),
        names,
        to_sys(x.validity().not_before),
        to_sys(x.validity().not_after),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_prints_utc_dates() {
        let at = |s: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_577_836_800), "2020-01-01T00:00:00Z");
        assert_eq!(at(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn key_bytes_are_zeroed_when_dropped() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        // The private key's DER as kept in the model, and a file's bytes as read.
        zeroed_on_drop::<SecretKeyDer>();
        zeroed_on_drop::<crate::config::FileBytes>();
    }
}
