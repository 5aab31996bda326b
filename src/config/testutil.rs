//! Test fixtures: certificates and keys written to a temporary folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use super::apply::DirFileSource;
use super::load::parse_text;
use super::model::Model;

/// A temporary config folder holding PEM files.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    cas: HashMap<String, (rcgen::Certificate, KeyPair)>,
}

impl Fixture {
    pub fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
            cas: HashMap::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn files(&self) -> DirFileSource {
        DirFileSource::new(self.dir.path())
    }

    /// Writes `name` readable by its owner only (as a private key must be).
    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        crate::pki::write_private(&p, data).expect("write fixture");
        p
    }

    /// `NAME.crt` and `NAME.key`: a self-signed leaf for `dns`, with CN `NAME`.
    pub fn leaf(&self, name: &str, dns: &str) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![dns.to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("cert");
        self.write(&format!("{name}.crt"), cert.pem().as_bytes());
        self.write(&format!("{name}.key"), key.serialize_pem().as_bytes());
    }

    /// `NAME.crt` and `NAME.key`: a CA (self-signed, or signed by CA `parent`).
    pub fn ca(&mut self, name: &str, parent: Option<&str>) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = match parent.and_then(|p| self.cas.get(p)) {
            Some((pc, pk)) => params.signed_by(&key, pc, pk).expect("cert"),
            None => params.self_signed(&key).expect("cert"),
        };
        self.write(&format!("{name}.crt"), cert.pem().as_bytes());
        self.write(&format!("{name}.key"), key.serialize_pem().as_bytes());
        self.cas.insert(name.to_string(), (cert, key));
    }

    /// `NAME.crt` and `NAME.key`: a leaf for `dns` signed by CA `ca`.
    pub fn signed_leaf(&self, name: &str, dns: &str, ca: &str) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![dns.to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        let (cc, ck) = self.cas.get(ca).expect("known CA");
        let cert = params.signed_by(&key, cc, ck).expect("cert");
        self.write(&format!("{name}.crt"), cert.pem().as_bytes());
        self.write(&format!("{name}.key"), key.serialize_pem().as_bytes());
    }

    /// Parse and apply `text` as one batch on an empty model.
    pub fn model(&self, text: &str) -> Model {
        let cmds = parse_text(text, "test.conf").unwrap_or_else(|e| panic!("{e:?}"));
        match Model::default().apply_batch(&cmds, &self.files()) {
            Ok((m, _)) => m,
            Err(e) => panic!("{e}"),
        }
    }
}
