//! https origins (SPEC §3): the real binary in front of a TLS origin whose CA
//! and certificates are generated at test time. The origin counts TLS
//! handshakes and records what it was asked (SNI, Host, HTTP version).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

const PAGE: &str = "<html><head><title>shop</title></head><body>hello</body></html>";

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "tagproxy test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IPs), optionally
    /// already expired.
    fn leaf(&self, names: &[&str], expired: bool) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// What the TLS origin saw of one request.
#[derive(Debug, Clone)]
struct TlsSeen {
    sni: Option<String>,
    version: http::Version,
    host: Option<String>,
    authority: Option<String>,
    forwarded_host: Option<String>,
}

/// An https origin on 127.0.0.1 serving `PAGE`, HTTP/1.1 and (when `h2`)
/// h2 by ALPN.
struct TlsOrigin {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<TlsSeen>>>,
}

impl TlsOrigin {
    async fn start(cert_pem: &str, key_pem: &str, h2: bool) -> TlsOrigin {
        tagproxy::delivery::install_tls_provider();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, record) = (handshakes.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let count = count.clone();
                let record = record.clone();
                tokio::spawn(async move {
                    // A client that rejects the certificate aborts here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let sni = tls.get_ref().1.server_name().map(str::to_string);
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string)
                        };
                        record.lock().unwrap().push(TlsSeen {
                            sni: sni.clone(),
                            version: req.version(),
                            host: header("host"),
                            authority: req.uri().authority().map(|a| a.to_string()),
                            forwarded_host: header("x-forwarded-host"),
                        });
                        async move {
                            Ok::<_, Infallible>(respond(
                                200,
                                &[("content-type", "text/html; charset=utf-8")],
                                PAGE,
                            ))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsOrigin {
            addr,
            handshakes,
            seen,
        }
    }

    fn seen(&self) -> Vec<TlsSeen> {
        self.seen.lock().unwrap().clone()
    }
}

/// tagproxy in front of `upstream` with `server_extra` in `[server]`; `ca`
/// is written next to the config as `ca.pem`.
async fn proxy(upstream: &str, server_extra: &str, ca: Option<&str>) -> Proxy {
    let text = format!("[server]\n{LISTEN_ANY}\nupstream = \"{upstream}\"\n{server_extra}\n");
    let (dir, path) = write_config(&text);
    if let Some(ca) = ca {
        std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    }
    Proxy::spawn(dir, path, &[]).await
}

async fn get_page(proxy: &Proxy, host: Option<&str>) -> (u16, String) {
    let mut req = client().get(proxy.url("/")).header("accept", "text/html");
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// The log line tagproxy wrote for a rejected origin certificate.
fn rejection(proxy: &Proxy) -> Option<serde_json::Value> {
    proxy.logs().lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["message"] == "origin TLS certificate rejected").then_some(v)
    })
}

#[tokio::test]
async fn https_origin_with_upstream_ca_is_proxied_injected_and_reused() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], false);
    let origin = TlsOrigin::start(&cert, &key, true).await;
    let proxy = proxy(
        &format!("https://{}", origin.addr),
        "upstream_ca = \"ca.pem\"",
        Some(&ca.pem()),
    )
    .await;
    for _ in 0..8 {
        let (status, body) = get_page(&proxy, None).await;
        assert_eq!(status, 200, "{}", proxy.logs());
        assert!(body.contains(TAG), "not injected: {body}");
        assert!(body.contains("hello"));
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 8);
    // ALPN chose h2; the certificate name and SNI are the URL's host.
    assert!(
        seen.iter().all(|s| s.version == http::Version::HTTP_2),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|s| s.sni.is_none()),
        "an IP is not sent as SNI: {seen:?}"
    );
    // Without upstream_host, the origin sees the visitor's Host.
    let visitor_host = proxy.addr.to_string();
    assert!(
        seen.iter()
            .all(|s| s.authority.as_deref() == Some(visitor_host.as_str())),
        "{seen:?}"
    );
    // Pooled: eight sequential requests, one TLS handshake.
    assert_eq!(origin.handshakes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http1_origin_is_reused_and_sees_upstream_host() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["shop.example", "localhost"], false);
    let origin = TlsOrigin::start(&cert, &key, false).await;
    // A SaaS origin: reached by its own name (here localhost), routed by Host.
    let proxy = proxy(
        &format!("https://localhost:{}", origin.addr.port()),
        "upstream_ca = \"ca.pem\"\nupstream_host = \"shop.example\"",
        Some(&ca.pem()),
    )
    .await;
    for _ in 0..5 {
        let (status, body) = get_page(&proxy, Some("www.customer.example")).await;
        assert_eq!(status, 200, "{}", proxy.logs());
        assert!(body.contains(TAG));
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 5);
    for s in &seen {
        assert_eq!(s.version, http::Version::HTTP_11);
        assert_eq!(s.host.as_deref(), Some("shop.example"));
        assert_eq!(s.sni.as_deref(), Some("localhost"));
        assert_eq!(s.forwarded_host.as_deref(), Some("www.customer.example"));
    }
    assert_eq!(origin.handshakes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unknown_issuer_is_502_with_the_reason_logged() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], false);
    let origin = TlsOrigin::start(&cert, &key, true).await;
    let proxy = proxy(&format!("https://{}", origin.addr), "", None).await;
    let (status, body) = get_page(&proxy, None).await;
    assert_eq!(status, 502);
    assert!(body.contains("certificate"), "{body}");
    let line = rejection(&proxy).expect("a log line for the rejected certificate");
    let reason = line["reason"].as_str().unwrap();
    assert!(reason.contains("unknown issuer"), "{line}");
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn expired_certificate_is_502_with_the_reason_logged() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], true);
    let origin = TlsOrigin::start(&cert, &key, true).await;
    let proxy = proxy(
        &format!("https://{}", origin.addr),
        "upstream_ca = \"ca.pem\"",
        Some(&ca.pem()),
    )
    .await;
    let resp = client()
        .get(proxy.url("/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("certificate"));
    let line = rejection(&proxy).expect("a log line for the rejected certificate");
    assert!(
        line["reason"].as_str().unwrap().contains("expired"),
        "{line}"
    );
}

#[tokio::test]
async fn certificate_for_another_name_needs_upstream_sni() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["origin.internal.example"], false);
    let origin = TlsOrigin::start(&cert, &key, true).await;
    let upstream = format!("https://{}", origin.addr);

    let wrong = proxy(&upstream, "upstream_ca = \"ca.pem\"", Some(&ca.pem())).await;
    let (status, _) = get_page(&wrong, None).await;
    assert_eq!(status, 502);
    let line = rejection(&wrong).expect("a log line for the rejected certificate");
    let reason = line["reason"].as_str().unwrap();
    assert!(reason.contains("name mismatch"), "{line}");
    assert!(reason.contains("origin.internal.example"), "{line}");
    assert!(reason.contains("127.0.0.1"), "{line}");
    assert!(origin.seen().is_empty());

    let named = proxy(
        &upstream,
        "upstream_ca = \"ca.pem\"\nupstream_sni = \"origin.internal.example\"",
        Some(&ca.pem()),
    )
    .await;
    let (status, body) = get_page(&named, None).await;
    assert_eq!(status, 200, "{}", named.logs());
    assert!(body.contains(TAG));
    let seen = origin.seen();
    assert_eq!(seen[0].sni.as_deref(), Some("origin.internal.example"));
}

#[tokio::test]
async fn plain_http_origin_behind_an_https_upstream_is_502() {
    // Someone wrote https:// for an origin that speaks plain HTTP.
    let origin = Origin::page("text/html", PAGE).await;
    let proxy = proxy(&format!("https://{}", origin.addr), "", None).await;
    let (status, body) = get_page(&proxy, None).await;
    assert_eq!(status, 502);
    assert!(body.contains("origin TLS handshake failed"), "{body}");
    assert!(proxy.logs().contains("origin TLS handshake failed"));
}

#[tokio::test]
async fn check_validates_the_tls_keys() {
    let run = |text: &str, files: &[(&str, &str)]| {
        let (dir, path) = write_config(text);
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let out = std::process::Command::new(bin())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).replace(&format!("{}", path.display()), "F"),
        )
    };
    let ca = Ca::new().pem();
    let (code, err) = run(
        "[server]\nupstream = \"https://shop.example\"\nupstream_ca = \"missing.pem\"\n",
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.starts_with("F:3:15: upstream_ca: cannot read"), "{err}");
    let (code, err) = run(
        "[server]\nupstream = \"https://shop.example\"\nupstream_ca = \"ca.pem\"\n",
        &[("ca.pem", "not a certificate")],
    );
    assert_eq!(code, Some(1));
    assert!(err.starts_with("F:3:15: upstream_ca: "), "{err}");
    assert!(err.contains("no PEM certificate"), "{err}");
    let (code, err) = run(
        "[server]\nupstream = \"https://shop.example\"\nupstream_sni = \"not a name!\"\n",
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.starts_with("F:3:16: invalid upstream_sni"), "{err}");
    let (code, err) = run(
        "[server]\nupstream = \"https://shop.example\"\nupstream_host = \"a b\"\n",
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.starts_with("F:3:17: invalid upstream_host"), "{err}");
    // Fine with https; with http the keys do nothing, which check says.
    let (code, err) = run(
        "[server]\nupstream = \"https://shop.example\"\nupstream_ca = \"ca.pem\"\nupstream_sni = \"origin.example\"\n",
        &[("ca.pem", &ca)],
    );
    assert_eq!((code, err.as_str()), (Some(0), ""));
    let (code, err) = run(
        "[server]\nupstream = \"http://shop.example\"\nupstream_ca = \"ca.pem\"\nupstream_sni = \"origin.example\"\n",
        &[("ca.pem", &ca)],
    );
    assert_eq!(code, Some(0));
    assert!(
        err.contains("warning: F:3:1: upstream_ca has no effect"),
        "{err}"
    );
    assert!(
        err.contains("warning: F:4:1: upstream_sni has no effect"),
        "{err}"
    );
}
