//! ACME certificates for `acme_domains` (SPEC §2 `[server.tls]`): obtained
//! with TLS-ALPN-01 (RFC 8737) on the HTTPS listener itself, kept under
//! `data_dir/acme`, renewed at two thirds of their life.
//!
//! The protocol is instant-acme's; what to do around it is ours: where
//! files live, when to renew, the lock that lets several instances share a
//! `data_dir` (one orders, the others pick the result up from disk), and
//! backoff after a failure while the certificate in service stays.
//!
//! Layout of `data_dir/acme`:
//! - `account-<h>.json`: the account's credentials for directory `<h>`
//! - `<h>/fullchain.pem`, `<h>/privkey.pem`: the certificate for this
//!   directory and set of domains (`<h>` hashes them)
//! - `challenges/<domain>.pem`: a TLS-ALPN-01 answer while an order is
//!   being validated, so an instance that did not order can answer too
//! - `lock`: held (flock) by the instance ordering

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, LetsEncrypt,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use sha2::{Digest, Sha256};

use super::{format_time, unix_now, CertStore, LoadedCert};
use crate::config::{Loaded, TlsConfig};

/// How often a certificate that is not due is re-read from disk (another
/// instance sharing `data_dir` may have renewed it).
const RECHECK: Duration = Duration::from_secs(60);
/// The first wait after a failed order; each next one twice as long, up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// How long one order may wait for validation or the certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// What the ACME task needs, from `[server.tls]`.
#[derive(Debug, Clone)]
struct Settings {
    domains: Vec<String>,
    email: String,
    directory: String,
    /// `acme_ca`, resolved.
    ca: Option<PathBuf>,
    dir: PathBuf,
    account: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// When a certificate valid from `not_before` to `not_after` (Unix seconds)
/// is renewed: at two thirds of its life (Let's Encrypt's advice for its
/// 90-day certificates: renew with 30 days left).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) * 2 / 3
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Serves the certificate of `acme_domains` on `store`: the one on disk at
/// once when there is one, then a task that orders, renews and picks up
/// renewals of other instances. Errors only when `data_dir/acme` cannot be
/// made.
pub fn spawn(loaded: &Loaded, tls: &TlsConfig, store: Arc<CertStore>) -> anyhow::Result<()> {
    let directory = if tls.acme_directory.is_empty() {
        LetsEncrypt::Production.url().to_string()
    } else {
        tls.acme_directory.clone()
    };
    let mut domains = tls.acme_domains.get_ref().clone();
    domains.sort();
    domains.dedup();
    let dir = loaded.data_dir().join("acme");
    std::fs::create_dir_all(dir.join("challenges"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut parts = vec![directory.as_str()];
    parts.extend(domains.iter().map(String::as_str));
    let cert_dir = dir.join(short_hash(&parts));
    std::fs::create_dir_all(&cert_dir)
        .with_context(|| format!("cannot create {}", cert_dir.display()))?;
    let settings = Settings {
        account: dir.join(format!("account-{}.json", short_hash(&[&directory]))),
        cert: cert_dir.join("fullchain.pem"),
        key: cert_dir.join("privkey.pem"),
        ca: (!tls.acme_ca.get_ref().is_empty())
            .then(|| crate::config::relative_to(&loaded.path, tls.acme_ca.get_ref())),
        domains,
        email: tls.acme_email.clone(),
        directory,
        dir,
    };
    store.set_challenge_dir(settings.dir.join("challenges"));
    if let Ok(on_disk) = LoadedCert::read(&settings.cert, &settings.key) {
        tracing::info!(
            not_after = format_time(on_disk.not_after),
            "ACME certificate loaded from data_dir"
        );
        store.set(on_disk);
    }
    tokio::spawn(run(settings, store));
    Ok(())
}

/// Renews when due, forever; a failure keeps the certificate in service
/// and retries with backoff.
async fn run(settings: Settings, store: Arc<CertStore>) {
    let mut failures = 0u32;
    loop {
        let on_disk = LoadedCert::read(&settings.cert, &settings.key).ok();
        if let Some(disk) = &on_disk {
            let newer = store
                .current()
                .is_none_or(|cur| cur.key.cert != disk.key.cert);
            if newer {
                tracing::info!(
                    not_after = format_time(disk.not_after),
                    "ACME certificate renewed by another instance; now in service"
                );
                store.set(disk.clone());
            }
        }
        let now = unix_now();
        if let Some(disk) = &on_disk {
            let due = renew_at(disk.not_before, disk.not_after);
            if due > now {
                let wait = Duration::from_secs((due - now) as u64).min(RECHECK);
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        match renew(&settings, &store).await {
            Ok(cert) => {
                failures = 0;
                tracing::info!(
                    domains = ?settings.domains,
                    not_after = format_time(cert.not_after),
                    renew_at = format_time(renew_at(cert.not_before, cert.not_after)),
                    "ACME certificate obtained"
                );
                store.set(cert);
            }
            Err(e) => {
                failures += 1;
                let wait = RETRY_FIRST
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(RETRY_MAX);
                tracing::error!(
                    domains = ?settings.domains,
                    error = format!("{e:#}"),
                    retry_in_s = wait.as_secs(),
                    "ACME certificate order failed; the certificate in service (if any) stays"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Takes the lock, and orders a certificate unless another instance has
/// put a fresh one on disk meanwhile.
async fn renew(settings: &Settings, store: &Arc<CertStore>) -> anyhow::Result<LoadedCert> {
    let _lock = lock(&settings.dir.join("lock")).await?;
    if let Ok(disk) = LoadedCert::read(&settings.cert, &settings.key) {
        if renew_at(disk.not_before, disk.not_after) > unix_now() {
            return Ok(disk);
        }
    }
    order(settings, store).await
}

/// Waits for the exclusive lock on `path` (released when the file is
/// dropped, or when the process dies).
async fn lock(path: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(Duration::from_secs(1)).await
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(anyhow!("cannot lock {}: {e}", path.display()))
            }
        }
    }
}

/// The account for the directory: stored credentials, or a new account
/// whose credentials are stored.
async fn account(settings: &Settings) -> anyhow::Result<Account> {
    let builder = || match &settings.ca {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    };
    if let Ok(text) = std::fs::read_to_string(&settings.account) {
        let credentials: AccountCredentials = serde_json::from_str(&text)
            .with_context(|| format!("{} does not parse", settings.account.display()))?;
        return Ok(builder()?.from_credentials(credentials).await?);
    }
    let contact = format!("mailto:{}", settings.email);
    let contacts: Vec<&str> = if settings.email.is_empty() {
        Vec::new()
    } else {
        vec![contact.as_str()]
    };
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .context("cannot create the ACME account")?;
    write_atomic(
        &settings.account,
        serde_json::to_string(&credentials)?.as_bytes(),
    )?;
    Ok(account)
}

/// One order: TLS-ALPN-01 for every domain, then the certificate, written
/// to disk.
async fn order(settings: &Settings, store: &Arc<CertStore>) -> anyhow::Result<LoadedCert> {
    let account = account(settings).await?;
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .context("new order")?;
    let mut answered = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.context("authorization")?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => bail!("authorization is {other:?}"),
            }
            let mut challenge = authz
                .challenge(ChallengeType::TlsAlpn01)
                .ok_or_else(|| anyhow!("the ACME server offers no tls-alpn-01 challenge"))?;
            let domain = challenge.identifier().to_string();
            let (pem, cert) =
                challenge_cert(&domain, challenge.key_authorization().digest().as_ref())?;
            write_atomic(&challenge_file(settings, &domain), pem.as_bytes())?;
            store.set_challenge(&domain, cert);
            answered.push(domain);
            challenge.set_ready().await.context("challenge ready")?;
        }
        let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retries).await.context("validation")?;
        if status != OrderStatus::Ready {
            bail!("the order is {status:?} after validation");
        }
        let key_pem = order.finalize().await.context("finalize")?;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .context("certificate")?;
        Ok((chain_pem, key_pem))
    }
    .await;
    for domain in &answered {
        store.clear_challenge(domain);
        let _ = std::fs::remove_file(challenge_file(settings, domain));
    }
    let (chain_pem, key_pem) = result?;
    let cert = LoadedCert::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())
        .map_err(|e| anyhow!("the issued certificate: {e}"))?;
    // Key first: a reader seeing the new key with the old chain fails the
    // match check and keeps what it has.
    write_atomic(&settings.key, key_pem.as_bytes())?;
    write_atomic(&settings.cert, chain_pem.as_bytes())?;
    Ok(cert)
}

fn challenge_file(settings: &Settings, domain: &str) -> PathBuf {
    settings
        .dir
        .join("challenges")
        .join(format!("{}.pem", domain.to_ascii_lowercase()))
}

/// The self-signed certificate that answers a TLS-ALPN-01 challenge for
/// `domain` (RFC 8737 §3: the domain as its only name and the key
/// authorization's SHA-256 in a critical acmeIdentifier extension), as a
/// PEM bundle (certificate and key) and ready to serve.
pub fn challenge_cert(
    domain: &str,
    digest: &[u8],
) -> anyhow::Result<(String, Arc<rustls::sign::CertifiedKey>)> {
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let key = super::challenge_key(pem.as_bytes())
        .ok_or_else(|| anyhow!("the challenge certificate does not load"))?;
    Ok((pem, key))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader sees the old file or the new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_life() {
        // 90 days: renewed with 30 left.
        let day = 86_400;
        assert_eq!(renew_at(0, 90 * day), 60 * day);
        assert_eq!(renew_at(1000, 1000 + 3 * 3600), 1000 + 2 * 3600);
    }

    #[test]
    fn a_challenge_certificate_carries_the_digest_in_a_critical_extension() {
        let digest = [7u8; 32];
        let (pem, key) = challenge_cert("shop.example.com", &digest).unwrap();
        assert!(pem.contains("BEGIN PRIVATE KEY"));
        let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).unwrap();
        // id-pe-acmeIdentifier, RFC 8737 §6.1
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // An OCTET STRING (0x04, length 32) holding the digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
    }
}
