//! The HTTPS listener's certificate (SPEC §2 `[server.tls]`): read and
//! checked from PEM files, served to each handshake from a store that a
//! reload swaps without touching open connections, and watched for changes.
//!
//! Reload detection polls the files' contents every [`CERT_POLL`] rather
//! than using `notify`: a watch on a file follows its inode, so a rename
//! over it (certbot, `mv`) or a symlink swap (Kubernetes Secret volumes
//! swap a `..data` symlink to a new folder) leaves the watch on the old
//! file; watching folders instead means watching every folder a symlink
//! chain passes through. Reading two small files every 2 s costs nothing
//! and sees rewrites, renames and symlink swaps alike, and comparing bytes
//! (not mtime + inode) also sees a rewrite within the mtime's resolution.

pub mod acme;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics::Metrics;

/// How often the certificate files are read to see whether they changed
/// (SPEC: a change is in service within 10 s).
pub const CERT_POLL: Duration = Duration::from_secs(2);

/// The ALPN protocol of TLS-ALPN-01 challenge handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Which of the two files a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Cert,
    Key,
}

/// Why a certificate / key pair cannot be served.
#[derive(Debug, Clone)]
pub struct CertError {
    pub file: Which,
    pub message: String,
}

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn cert_error(message: impl Into<String>) -> CertError {
    CertError {
        file: Which::Cert,
        message: message.into(),
    }
}

fn key_error(message: impl Into<String>) -> CertError {
    CertError {
        file: Which::Key,
        message: message.into(),
    }
}

/// A certificate chain with its private key, checked to belong together
/// and to be valid when read.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// The leaf's validity, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl LoadedCert {
    /// Reads the PEM chain at `cert` and the PEM key at `key`; messages
    /// name the file.
    pub fn read(cert: &Path, key: &Path) -> Result<LoadedCert, CertError> {
        let cert_pem = std::fs::read(cert)
            .map_err(|e| cert_error(format!("cert: cannot read {}: {e}", cert.display())))?;
        let key_pem = std::fs::read(key)
            .map_err(|e| key_error(format!("key: cannot read {}: {e}", key.display())))?;
        LoadedCert::from_pem(&cert_pem, &key_pem).map_err(|e| CertError {
            message: match e.file {
                Which::Cert => format!("cert: {}: {}", cert.display(), e.message),
                Which::Key => format!("key: {}: {}", key.display(), e.message),
            },
            ..e
        })
    }

    /// Parses a PEM chain (leaf first) and a PEM private key, and checks
    /// that the key is the leaf's and that the leaf is valid now.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<LoadedCert, CertError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_error(format!("not a PEM certificate file ({e})")))?;
        let Some(leaf) = chain.first() else {
            return Err(cert_error(
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
            ));
        };
        let (not_before, not_after) = validity(leaf).map_err(cert_error)?;
        let der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            key_error(format!(
                "no PEM private key (-----BEGIN PRIVATE KEY-----) in the file ({e})"
            ))
        })?;
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| key_error(format!("the private key is not usable: {e}")))?;
        let key = CertifiedKey::new(chain, signing);
        match key.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(key_error(
                    "the private key does not match the certificate (the first one in the cert file)",
                ))
            }
            Err(e) => return Err(cert_error(format!("the certificate does not parse: {e}"))),
        }
        let loaded = LoadedCert {
            key: Arc::new(key),
            not_before,
            not_after,
        };
        loaded.valid_at(unix_now()).map_err(cert_error)?;
        Ok(loaded)
    }

    /// Whether the leaf is within its validity at `now` (Unix seconds).
    pub fn valid_at(&self, now: i64) -> Result<(), String> {
        if now > self.not_after {
            return Err(format!(
                "the certificate expired on {}",
                format_time(self.not_after)
            ));
        }
        if now < self.not_before {
            return Err(format!(
                "the certificate is not valid before {}",
                format_time(self.not_before)
            ));
        }
        Ok(())
    }
}

/// A TLS-ALPN-01 challenge answer (certificate and key in one PEM) ready
/// to serve. Not checked like a real certificate: webpki refuses its
/// critical acmeIdentifier extension, which only the CA reads.
pub fn challenge_key(pem: &[u8]) -> Option<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    if chain.is_empty() {
        return None;
    }
    let key = PrivateKeyDer::from_pem_slice(pem).ok()?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .ok()?;
    Some(Arc::new(CertifiedKey::new(chain, signing)))
}

/// The leaf's `notBefore` and `notAfter`, Unix seconds.
pub fn validity(leaf: &CertificateDer<'_>) -> Result<(i64, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for log lines and messages.
pub fn format_time(unix: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(unix)
        .ok()
        .map(|t| {
            let d = t.to_datetime();
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                d.year(),
                u8::from(d.month()),
                d.day(),
                d.hour(),
                d.minute(),
                d.second()
            )
        })
        .unwrap_or_else(|| unix.to_string())
}

/// The certificate in service, and ACME challenge certificates by domain;
/// every handshake asks it. Swapping the certificate leaves open
/// connections on the one they started with.
pub struct CertStore {
    current: ArcSwapOption<LoadedCert>,
    /// TLS-ALPN-01 challenge certificates by domain, answered only to
    /// handshakes that offer `acme-tls/1`.
    challenges: DashMap<String, Arc<CertifiedKey>>,
    /// Where instances sharing `data_dir` leave challenge answers
    /// (`<domain>.pem`, certificate and key): the CA's validation may reach
    /// an instance other than the one that ordered.
    challenge_dir: std::sync::OnceLock<PathBuf>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field(
                "not_after",
                &self.current.load().as_ref().map(|c| c.not_after),
            )
            .finish()
    }
}

impl CertStore {
    /// A store serving `first` (`None`: handshakes fail until one is set).
    pub fn new(first: Option<LoadedCert>, metrics: Option<Arc<Metrics>>) -> Arc<CertStore> {
        let store = Arc::new(CertStore {
            current: ArcSwapOption::empty(),
            challenges: DashMap::new(),
            challenge_dir: std::sync::OnceLock::new(),
            metrics,
        });
        if let Some(first) = first {
            store.set(first);
        }
        store
    }

    /// Puts `cert` in service for new handshakes.
    pub fn set(&self, cert: LoadedCert) {
        if let Some(m) = &self.metrics {
            m.tls_cert_not_after.store(
                cert.not_after.max(0) as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.current.store(Some(Arc::new(cert)));
    }

    /// The certificate in service.
    pub fn current(&self) -> Option<Arc<LoadedCert>> {
        self.current.load_full()
    }

    /// Answers TLS-ALPN-01 handshakes for `domain` with `cert`.
    pub fn set_challenge(&self, domain: &str, cert: Arc<CertifiedKey>) {
        self.challenges.insert(domain.to_ascii_lowercase(), cert);
    }

    pub fn clear_challenge(&self, domain: &str) {
        self.challenges.remove(&domain.to_ascii_lowercase());
    }

    /// Also answers challenges from `<dir>/<domain>.pem` (written by
    /// whichever instance ordered).
    pub fn set_challenge_dir(&self, dir: PathBuf) {
        let _ = self.challenge_dir.set(dir);
    }

    /// A challenge answer another instance left on disk.
    fn challenge_on_disk(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        // A name with a path separator is no domain.
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return None;
        }
        let pem = std::fs::read(self.challenge_dir.get()?.join(format!("{name}.pem"))).ok()?;
        challenge_key(&pem)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return match self.challenges.get(&name) {
                Some(c) => Some(c.clone()),
                None => self.challenge_on_disk(&name),
            };
        }
        self.current.load().as_ref().map(|c| c.key.clone())
    }
}

/// The rustls settings of the HTTPS listener: rustls' safe defaults (TLS
/// 1.2 and 1.3, forward-secret AEAD suites only), session tickets, h2 then
/// HTTP/1.1 by ALPN and, with ACME, `acme-tls/1` for challenges.
pub fn server_config(store: Arc<CertStore>, acme: bool) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_no_client_auth()
    .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Stateless session tickets (keys rotated every 6 hours), as nginx has
    // by default: a returning browser resumes instead of a full handshake.
    match rustls::crypto::ring::Ticketer::new() {
        Ok(ticketer) => config.ticketer = ticketer,
        Err(e) => tracing::warn!(error = %e, "no TLS session tickets"),
    }
    if acme {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    Arc::new(config)
}

/// Reads `cert` and `key` every [`CERT_POLL`]; when their bytes change,
/// checks the new pair and puts it in service, or logs why not and keeps
/// the one in service. Runs until the process ends.
pub fn watch_files(store: Arc<CertStore>, cert: PathBuf, key: PathBuf) {
    tokio::spawn(async move {
        let read = || (std::fs::read(&cert).ok(), std::fs::read(&key).ok());
        let mut seen = read();
        let mut ticks = tokio::time::interval(CERT_POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = read();
            if now == seen {
                continue;
            }
            seen = now;
            match LoadedCert::read(&cert, &key) {
                Ok(loaded) => {
                    tracing::info!(
                        cert = %cert.display(),
                        not_after = format_time(loaded.not_after),
                        "TLS certificate reloaded"
                    );
                    store.set(loaded);
                }
                Err(e) => {
                    tracing::error!(
                        cert = %cert.display(),
                        problem = %e,
                        "TLS certificate reload failed; the previous certificate stays in service"
                    );
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(not_after_year: i32) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["example.test".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_valid_pair_loads_with_its_dates() {
        let (cert, key) = pair(2100);
        let loaded = LoadedCert::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(format_time(loaded.not_before), "2000-01-01T00:00:00Z");
        assert_eq!(format_time(loaded.not_after), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn expired_mismatched_and_garbage_pairs_say_why() {
        let (cert, key) = pair(2001);
        let e = LoadedCert::from_pem(cert.as_bytes(), key.as_bytes()).unwrap_err();
        assert_eq!(e.file, Which::Cert);
        assert_eq!(e.message, "the certificate expired on 2001-01-01T00:00:00Z");

        let (cert, _) = pair(2100);
        let (_, other_key) = pair(2100);
        let e = LoadedCert::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert_eq!(e.file, Which::Key);
        assert!(e.message.contains("does not match"), "{e}");

        let e = LoadedCert::from_pem(b"hello", other_key.as_bytes()).unwrap_err();
        assert_eq!(e.file, Which::Cert);
        assert!(e.message.contains("no PEM certificate"), "{e}");
        let e = LoadedCert::from_pem(cert.as_bytes(), b"hello").unwrap_err();
        assert_eq!(e.file, Which::Key);
        assert!(e.message.contains("no PEM private key"), "{e}");
    }
}
