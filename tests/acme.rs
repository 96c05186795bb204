//! ACME (SPEC §2 `[server.tls] acme_domains`) end to end against a local
//! pebble, Let's Encrypt's ACME test server (Debian package `pebble`,
//! installed by tests/run.sh): issuance with TLS-ALPN-01 on tagproxy's own
//! HTTPS listener, then a renewal at two thirds of a certificate's life by
//! a second instance sharing the same `data_dir`.
//!
//! pebble validates TLS-ALPN-01 on its `tlsPort`, set to tagproxy's TLS
//! port; names resolve through pebble-challtestsrv's mock DNS, which
//! answers 127.0.0.1 for every name.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::net::TcpStream;

const DOMAIN: &str = "shop.example.com";
const PAGE: &str = "<html><head><title>shop</title></head><body>hello</body></html>";

/// A child process killed when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running pebble (with its mock DNS) and the CA its HTTPS uses.
struct Pebble {
    directory: String,
    management: SocketAddr,
    /// PEM of the test CA that signed pebble's own HTTPS certificate.
    https_ca: String,
    _procs: Vec<Killed>,
}

fn find(bin: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("{bin} is not installed: apt-get install -y pebble (tests/run.sh installs it)");
}

/// A test CA.
fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "tagproxy acme test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

async fn wait_port(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Pebble {
    /// Starts pebble validating TLS-ALPN-01 on `tls_port`.
    async fn start(dir: &Path, tls_port: u16) -> Pebble {
        let pebble = find("pebble");
        let challtestsrv = find("pebble-challtestsrv");
        let ca = ca();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "pebble");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join("pebble-cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).unwrap();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dns = format!("127.0.0.1:{}", free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": listen.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": dir.join("pebble-cert.pem"),
            "privateKey": dir.join("pebble-key.pem"),
            "httpPort": free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let dns_srv = Command::new(challtestsrv)
            .args([
                "-dns01",
                &dns,
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Command::new(pebble)
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &dns])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Every order gets fresh authorizations: the renewal validates again.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .unwrap();
        let procs = vec![Killed(dns_srv), Killed(server)];
        wait_port(listen, "pebble").await;
        wait_port(management, "pebble management").await;
        Pebble {
            directory: format!("https://{listen}/dir"),
            management,
            https_ca: ca.pem(),
            _procs: procs,
        }
    }

    /// The root pebble issues under (it makes a new one each start).
    async fn issuing_root(&self) -> String {
        tagproxy::delivery::install_tls_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([reqwest::Certificate::from_pem(self.https_ca.as_bytes()).unwrap()])
            .build()
            .unwrap();
        client
            .get(format!("https://{}/roots/0", self.management))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The leaf a new handshake for `DOMAIN` is shown, if it verifies against
/// `root_pem`.
async fn served_by(addr: SocketAddr, root_pem: &str) -> Option<CertificateDer<'static>> {
    tagproxy::delivery::install_tls_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].clone())
}

/// Waits up to `secs` for a handshake that verifies against `root_pem`.
async fn wait_served_by(
    proxy: &Proxy,
    addr: SocketAddr,
    root_pem: &str,
    secs: u64,
) -> CertificateDer<'static> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(cert) = served_by(addr, root_pem).await {
            return cert;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from that root within {secs} s:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn config(origin: SocketAddr, tls_port: u16, pebble: &Pebble, data_dir: &Path) -> String {
    format!(
        "data_dir = \"{}\"\n[server]\n{LISTEN_ANY}\nupstream = \"http://{origin}\"\n\n[server.tls]\nlisten = \"127.0.0.1:{tls_port}\"\nacme_domains = [\"{DOMAIN}\"]\nacme_email = \"ops@example.com\"\nacme_directory = \"{}\"\nacme_ca = \"pebble-ca.pem\"\n",
        data_dir.display(),
        pebble.directory
    )
}

async fn start(text: &str, pebble: &Pebble) -> Proxy {
    let (dir, path) = write_config(text);
    std::fs::write(dir.path().join("pebble-ca.pem"), &pebble.https_ca).unwrap();
    Proxy::spawn(dir, path, &[]).await
}

/// The certificate folder under data_dir/acme.
fn cert_dir(data_dir: &Path) -> PathBuf {
    std::fs::read_dir(data_dir.join("acme"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("fullchain.pem").exists())
        .expect("no certificate in data_dir/acme")
}

#[tokio::test]
async fn acme_issues_with_tls_alpn_01_and_renews_at_two_thirds_of_the_life() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("shared-data");
    let tls_port = free_port();
    let pebble = Pebble::start(work.path(), tls_port).await;
    let origin = Origin::page("text/html", PAGE).await;
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();

    // 1. Issuance from nothing.
    let first = start(&config(origin.addr, tls_port, &pebble, &data_dir), &pebble).await;
    let root = pebble.issuing_root().await;
    let issued = wait_served_by(&first, tls_addr, &root, 60).await;
    first.wait_log("ACME certificate obtained").await;
    let resp = reqwest::Client::builder()
        .no_proxy()
        .user_agent(BROWSER_UA)
        .default_headers(common::browser_headers())
        .tls_certs_only([reqwest::Certificate::from_pem(root.as_bytes()).unwrap()])
        .resolve(DOMAIN, tls_addr)
        .build()
        .unwrap()
        .get(format!("https://{DOMAIN}:{tls_port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains(TAG));
    let files = cert_dir(&data_dir);
    assert_eq!(
        CertificateDer::from_pem_file(files.join("fullchain.pem")).unwrap(),
        issued
    );
    assert!(first
        .metrics()
        .await
        .contains("tagproxy_tls_cert_not_after_seconds "));
    drop(first);

    // 2. A second instance on the same data_dir, whose certificate is past
    // two thirds of its life in ~25 s: it serves that one, then renews.
    let local_ca = ca();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let life = Duration::from_secs(3 * 3600);
    let mut params = CertificateParams::new(vec![DOMAIN.to_string()]).unwrap();
    params.not_before = epoch + now + Duration::from_secs(25) - life * 2 / 3;
    params.not_after = params.not_before + life;
    let key = KeyPair::generate().unwrap();
    let old = params.signed_by(&key, &local_ca).unwrap();
    std::fs::write(files.join("privkey.pem"), key.serialize_pem()).unwrap();
    std::fs::write(files.join("fullchain.pem"), old.pem()).unwrap();

    let second = start(&config(origin.addr, tls_port, &pebble, &data_dir), &pebble).await;
    let before = wait_served_by(&second, tls_addr, &local_ca.pem(), 10).await;
    assert_eq!(before, *old.der(), "renewed before two thirds of the life");
    let renewed = wait_served_by(&second, tls_addr, &root, 90).await;
    assert_ne!(renewed, issued);
    let log = second.wait_log("ACME certificate obtained").await;
    assert!(!log.contains("ACME certificate order failed"), "{log}");
    assert_eq!(
        CertificateDer::from_pem_file(files.join("fullchain.pem")).unwrap(),
        renewed
    );
}

#[tokio::test]
async fn a_failing_acme_server_keeps_the_certificate_in_service_and_backs_off() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let origin = Origin::page("text/html", PAGE).await;
    let text = format!(
        "data_dir = \"{}\"\n[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\n\n[server.tls]\nlisten = \"127.0.0.1:0\"\nacme_domains = [\"{DOMAIN}\"]\nacme_directory = \"https://127.0.0.1:{}/dir\"\n",
        data_dir.display(),
        origin.addr,
        free_port()
    );
    let (dir, path) = write_config(&text);
    let proxy = Proxy::spawn(dir, path, &[]).await;
    let log = proxy.wait_log("ACME certificate order failed").await;
    assert!(log.contains("\"retry_in_s\":30"), "{log}");
    // A certificate due for renewal (past two thirds of its life) appears,
    // as another instance or a previous run would leave it: it is served
    // while renewing keeps failing, with a longer wait each time.
    let local_ca = ca();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut params = CertificateParams::new(vec![DOMAIN.to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + now - Duration::from_secs(7200);
    params.not_after = params.not_before + Duration::from_secs(9000);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &local_ca).unwrap();
    let files = std::fs::read_dir(data_dir.join("acme"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && !p.ends_with("challenges"))
        .unwrap();
    std::fs::write(files.join("privkey.pem"), key.serialize_pem()).unwrap();
    std::fs::write(files.join("fullchain.pem"), cert.pem()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proxy.logs().contains("\"retry_in_s\":60") {
        assert!(Instant::now() < deadline, "{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let tls_addr: SocketAddr = proxy
        .logs()
        .lines()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v.get("tls_listen")?.as_str()?.parse().ok()
        })
        .unwrap();
    assert_eq!(
        served_by(tls_addr, &local_ca.pem()).await,
        Some(cert.der().clone())
    );
}
