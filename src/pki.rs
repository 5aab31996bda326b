//! Throwaway certificate authorities for the demo, tests and benchmarks.
//!
//! Generates an ECDSA P-256 CA in memory and issues
//! leaf certificates from it, as PEM text. Never meant for production keys.
//! Keys are still kept as keys: in memory zeroed when dropped, on disk in
//! a folder only its owner can enter ([`private_dir`]) and in files only
//! the owner can read from the moment they exist ([`write_private`]).

use std::ffi::{CString, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SerialNumber};
use zeroize::Zeroizing;

/// A certificate and its private key, as PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the key.
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// A new folder `PREFIX.XXXXXX` in the system's temporary folder, with a
/// name no one else has (mkdtemp), mode 0700. The caller removes it.
pub fn private_dir(prefix: &str) -> io::Result<PathBuf> {
    let template = std::env::temp_dir().join(format!("{prefix}.XXXXXX"));
    let template = CString::new(template.into_os_string().into_vec())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in the temporary folder's name"))?;
    let mut bytes = template.into_bytes_with_nul();
    // SAFETY: bytes is a writable NUL-terminated template ending in XXXXXX,
    // which mkdtemp fills in place.
    if unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    bytes.pop();
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

/// Write `data` to `path`, readable and writable by its owner only: a new
/// file is created 0600, an existing one is made 0600 before a byte is
/// written to it.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    if f.metadata()?.permissions().mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(data)?;
    f.sync_all()
}

/// An in-memory CA.
pub struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

/// A fresh P-256 key and the parameters of a CA certificate named `name`.
fn ca_key_and_params(name: &str) -> Result<(KeyPair, CertificateParams), rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok((key, params))
}

impl Ca {
    pub fn new(name: &str) -> Result<Self, rcgen::Error> {
        let (key, params) = ca_key_and_params(name)?;
        let cert = params.self_signed(&key)?;
        Ok(Ca { key, cert })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A CA named `name` whose certificate this one issues (an intermediate).
    pub fn intermediate(&self, name: &str) -> Result<Ca, rcgen::Error> {
        let (key, params) = ca_key_and_params(name)?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Ca { key, cert })
    }

    pub fn cert_der(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// Issue a leaf for `names` (DNS names or IP addresses) with `serial`.
    /// (ECDSA P-256; RSA keys cannot be generated with ring: use openssl.)
    pub fn issue(&self, names: &[&str], serial: u64) -> Result<Issued, rcgen::Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn key_folders_are_unique_and_private_and_keys_are_owner_only() {
        let a = private_dir("shardtls-pki-test").unwrap();
        let b = private_dir("shardtls-pki-test").unwrap();
        assert_ne!(a, b);
        assert_eq!(mode(&a), 0o700, "{}", a.display());
        let key = a.join("k.key");
        write_private(&key, b"secret").unwrap();
        assert_eq!(mode(&key), 0o600);
        // An existing file that others could read is closed before the write.
        std::fs::write(b.join("k.key"), "old").unwrap();
        std::fs::set_permissions(b.join("k.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&b.join("k.key"), b"new").unwrap();
        assert_eq!(mode(&b.join("k.key")), 0o600);
        assert_eq!(std::fs::read(b.join("k.key")).unwrap(), b"new");
        for d in [a, b] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}
