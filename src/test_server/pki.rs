//! Throwaway certificates for tests, demos and benchmarks (rcgen, ECDSA P-256).
//!
//! A fresh CA and one leaf signed by it, for the given DNS names and IP
//! addresses. Nothing here is meant for production use: keys live in memory
//! and in PEM strings (zeroed when dropped), validity is whatever rcgen
//! defaults to. Written to disk, the folder is its owner's only (0700 when
//! created here) and the key file 0600 from the start.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

/// A throwaway CA and a leaf certificate signed by it.
pub struct TestPki {
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_pem: Zeroizing<String>,
    key_der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

impl TestPki {
    /// Generates a CA and a leaf for `names` (DNS names or IP literals).
    pub fn generate(names: &[&str]) -> Result<Self, rcgen::Error> {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "shardtls throwaway CA");
        let ca = ca_params.self_signed(&ca_key)?;

        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut leaf_params = CertificateParams::new(names.clone())?;
        if let Some(first) = names.first() {
            leaf_params.distinguished_name.push(DnType::CommonName, first.as_str());
        }
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;
        Ok(Self {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            cert_pem: leaf.pem(),
            cert_der: leaf.der().clone(),
            key_pem: Zeroizing::new(leaf_key.serialize_pem()),
            key_der: Zeroizing::new(leaf_key.serialize_der()),
        })
    }

    /// The leaf's private key (PKCS#8 DER).
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.to_vec()))
    }

    /// A server configuration presenting the leaf (see [`super::server_config`]).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        super::server_config(vec![self.cert_der.clone()], self.key_der())
    }

    /// A client configuration that trusts only this CA (ring provider, TLS 1.2 and 1.3).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(cfg))
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`; a missing
    /// `dir` is created 0700, and `key.pem` is 0600 from the start.
    pub fn write_to(&self, dir: &std::path::Path) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        std::fs::write(dir.join("ca.pem"), &self.ca_pem)?;
        std::fs::write(dir.join("cert.pem"), &self.cert_pem)?;
        crate::pki::write_private(&dir.join("key.pem"), self.key_pem.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_keys_are_private_from_the_start() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        TestPki::generate(&["localhost"]).unwrap().write_to(&dir).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
    }
}
