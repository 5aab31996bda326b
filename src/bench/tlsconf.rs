//! The load generator's rustls client configuration (ring provider): protocol
//! versions, cipher suites by ADC, rustls or OpenSSL name, ALPN, trust (a CA
//! file, or no verification for self-signed peers), and a session store that
//! remembers which configuration change was current when each session was
//! obtained (for `rotate`).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::{ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{NamedGroup, SupportedCipherSuite};

use super::{BenchArgs, Result, TlsVersion};

/// Tickets kept per server name.
const TICKETS_PER_SERVER: usize = 256;

/// The change count, bumped by `rotate` each time the admin API confirms a
/// change (so every shard has it): a connection started after that must not
/// resume a session tagged with a lower [`CHANGES_ISSUED`] count.
pub static CHANGE_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Changes sent to the admin API so far, including one whose reply has not
/// arrived yet. Sessions are tagged with this count: a session that arrives
/// while a change is in flight may already belong to the new epoch, so it
/// only counts as "from before a change" once a later change has completed.
pub static CHANGES_ISSUED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Epoch tag of the session offered by the last `ClientConnection::new`
    /// on this thread (rustls takes it synchronously while building the hello).
    static OFFERED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Clears the record of the offered session; call before `ClientConnection::new`.
pub fn reset_offered() {
    OFFERED.with(|c| c.set(None));
}

/// The epoch of the session offered by the last `ClientConnection::new` on
/// this thread, if one was offered.
pub fn offered_epoch() -> Option<u64> {
    OFFERED.with(|c| c.get())
}

/// Builds the client configuration the arguments ask for.
pub fn client_config(args: &BenchArgs, resumption: bool) -> Result<Arc<rustls::ClientConfig>> {
    let base = rustls::crypto::ring::default_provider();
    let suites = select_suites(&base.cipher_suites, &args.cipher)?;
    let provider = Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..base
    });
    let versions: &[&'static rustls::SupportedProtocolVersion] = match args.tls_version {
        Some(TlsVersion::V12) => &[&rustls::version::TLS12],
        Some(TlsVersion::V13) => &[&rustls::version::TLS13],
        None => rustls::DEFAULT_VERSIONS,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("--cipher/--tls-version: {e}"))?;
    let mut cfg = if args.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AnyServerCert::new(&provider)))
            .with_no_client_auth()
    } else {
        let Some(ca) = &args.ca else {
            return Err("give --ca PEM to verify the server, or --insecure to skip verification".into());
        };
        let pem = std::fs::read(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("--ca {}: malformed PEM: {e}", ca.display()))?;
            roots.add(cert).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("--ca {}: no certificate found", ca.display()).into());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = args.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    cfg.resumption = if resumption {
        Resumption::store(Arc::new(TaggedStore::default()))
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(cfg))
}

/// Reduces a suite name to comparable letters and digits: ADC
/// `TLS1.3-AES128-GCM-SHA256`, rustls `TLS13_AES_128_GCM_SHA256` and OpenSSL
/// `ECDHE-ECDSA-AES128-GCM-SHA256` all reduce alike.
fn normalize_suite(name: &str) -> String {
    let up = name.trim().to_ascii_uppercase().replace("_WITH_", "_");
    let rest = ["TLS1.3-", "TLS1.2-", "TLS13_", "TLS13-", "TLS_", "TLS-"]
        .iter()
        .find_map(|p| up.strip_prefix(p))
        .unwrap_or(&up);
    rest.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

fn select_suites(all: &[SupportedCipherSuite], wanted: &[String]) -> Result<Vec<SupportedCipherSuite>> {
    if wanted.is_empty() {
        return Ok(all.to_vec());
    }
    let mut out = Vec::new();
    for w in wanted {
        let n = normalize_suite(w);
        let found = all.iter().find(|s| {
            let sn = normalize_suite(&format!("{:?}", s.suite()));
            sn == n || sn == format!("{n}SHA256")
        });
        match found {
            Some(s) => out.push(*s),
            None => {
                let known: Vec<String> = all.iter().map(|s| format!("{:?}", s.suite())).collect();
                return Err(format!("--cipher {w}: unknown suite (known: {})", known.join(", ")).into());
            }
        }
    }
    Ok(out)
}

/// An in-memory session store whose entries carry the [`CHANGE_EPOCH`] at
/// the time they were stored, and which records the tag of the session it
/// hands out in a thread-local (see [`offered_epoch`]).
#[derive(Debug, Default)]
pub struct TaggedStore {
    kx: Mutex<HashMap<ServerName<'static>, NamedGroup>>,
    tls12: Mutex<HashMap<ServerName<'static>, (u64, Tls12ClientSessionValue)>>,
    tls13: Mutex<HashMap<ServerName<'static>, VecDeque<(u64, Tls13ClientSessionValue)>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientSessionStore for TaggedStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        lock(&self.kx).insert(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        lock(&self.kx).get(server_name).copied()
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        let epoch = CHANGES_ISSUED.load(Ordering::SeqCst);
        lock(&self.tls12).insert(server_name, (epoch, value));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        let g = lock(&self.tls12);
        let (epoch, v) = g.get(server_name)?;
        OFFERED.with(|c| c.set(Some(*epoch)));
        Some(v.clone())
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        lock(&self.tls12).remove(server_name);
    }

    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        let epoch = CHANGES_ISSUED.load(Ordering::SeqCst);
        let mut g = lock(&self.tls13);
        let q = g.entry(server_name).or_default();
        if q.len() >= TICKETS_PER_SERVER {
            // Drop the oldest; keeps the store bounded when the server sends
            // more tickets than connections use.
            q.pop_front();
        }
        q.push_back((epoch, value));
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        // Oldest first: every ticket gets used, so after a change the ones
        // obtained before it are offered (and must be refused) before newer ones.
        let (epoch, v) = lock(&self.tls13).get_mut(server_name)?.pop_front()?;
        OFFERED.with(|c| c.set(Some(epoch)));
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_names_in_three_dialects() {
        let all = rustls::crypto::ring::default_provider().cipher_suites;
        for name in [
            "TLS1.3-AES128-GCM-SHA256",
            "TLS13_AES_128_GCM_SHA256",
            "TLS1.2-ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-CHACHA20-POLY1305",
            "TLS1.3-CHACHA20-POLY1305-SHA256",
        ] {
            let got = select_suites(&all, &[name.to_string()]).unwrap();
            assert_eq!(got.len(), 1, "{name}");
        }
        assert!(select_suites(&all, &["RC4-MD5".to_string()]).is_err());
    }
}
