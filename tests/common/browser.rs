//! Headless Chromium driven over WebDriver: `chromedriver` (Debian package
//! `chromium-driver`) on a free 127.0.0.1 port, a fresh profile per browser,
//! and a fantoccini client. Never a downloaded browser: a missing package is
//! a test failure that says what to install (tests/run.sh installs both).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::free_port;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "chromedriver";

/// One headless Chromium session. Dropping it kills chromedriver and the
/// browser it started (they run in their own process group).
pub struct Browser {
    pub client: Client,
    driver: Child,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

/// `name` as found on PATH (or as given when it is a path), if executable.
fn which(name: &str) -> Option<PathBuf> {
    let is_exe = |p: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exe(&p).then_some(p);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| is_exe(p))
}

impl Browser {
    /// Starts chromedriver and opens a headless Chromium session; panics
    /// with an install hint when either package is missing.
    pub async fn start() -> Browser {
        Self::start_as(Some(super::BROWSER_UA)).await
    }

    /// Like [`start`](Self::start) with this User-Agent; `None` keeps
    /// headless Chromium's own (`HeadlessChrome/…`).
    pub async fn start_as(user_agent: Option<&str>) -> Browser {
        let chromium = which(CHROMIUM).unwrap_or_else(|| {
            panic!(
                "{CHROMIUM} not found: the browser tests need the Debian package `chromium` \
                 (apt-get install chromium chromium-driver; tests/run.sh installs it)"
            )
        });
        let driver_bin = which(CHROMEDRIVER).unwrap_or_else(|| {
            panic!(
                "`{CHROMEDRIVER}` not found on PATH: the browser tests need the Debian package \
                 `chromium-driver` (apt-get install chromium chromium-driver; tests/run.sh \
                 installs it)"
            )
        });

        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromedriver.log");
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group, so Drop can end chromedriver and every
            // browser process it started, even when a test panics.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver_bin.display()));
        // From here on, a panic still kills chromedriver (via Guard's Drop).
        let mut guard = Guard(Some(driver));

        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = guard.0.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "chromedriver exited ({status}) before listening: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within 20 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let user_data = profile.path().join("profile");
        let user_agent = match user_agent {
            Some(ua) => format!("--user-agent={ua}"),
            None => "--disable-extensions".to_string(),
        };
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", user_data.display()),
                    "--window-size=1280,720",
                    // Headless Chrome says "HeadlessChrome", which tagproxy's
                    // bot filter (rightly) drops: present as a desktop Chrome.
                    &user_agent,
                ],
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "could not open a Chromium session through chromedriver: {e}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Browser {
            client,
            driver: guard.0.take().unwrap(),
            log,
            _profile: profile,
        }
    }

    /// Runs `script` (a function body: use `return`) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `expr` (a JS expression) until it is truthy; returns its value.
    pub async fn wait_js(&self, expr: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let script = format!("return ({expr});");
        loop {
            // Errors count as "not yet": the page may be navigating.
            if let Ok(v) = self.client.execute(&script, vec![]).await {
                let truthy = match &v {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                if truthy {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "`{expr}` still not true after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// chromedriver's log (useful in assertion messages).
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ends the session cleanly (the browser quits), then chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Kills a chromedriver started before its session existed.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            kill_group(child);
        }
    }
}

/// SIGKILL to the child's process group (its pid: it leads the group), so
/// the browser processes go too; then reap the child.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}
