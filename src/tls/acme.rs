//! ACME certificates (TLS-ALPN-01); see `spawn`.

use std::sync::Arc;

use super::CertStore;
use crate::config::{Loaded, TlsConfig};

/// Obtains and renews the certificate of `acme_domains` in the background.
pub fn spawn(_loaded: &Loaded, _tls: &TlsConfig, _store: Arc<CertStore>) -> anyhow::Result<()> {
    anyhow::bail!("acme_domains is not supported yet")
}
