//! Configuration: the `tagproxy.toml` schema, loading and validation.
//!
//! Every problem is reported as `FILE:LINE:COL: message` (SPEC §1, §12) so an
//! operator can jump straight to it. Values that need more than a type check
//! (addresses, URLs, CIDRs) are parsed inside `Deserialize`, which lets the
//! TOML parser attach the exact span of the offending value to the error.

mod values;

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

pub use values::{
    canonical_ip, ListenAddr, PathPrefix, RoutePath, TlsServerName, TrustedProxies, UpstreamHost,
    UpstreamUrl,
};

/// The whole `tagproxy.toml` file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_tools_dir")]
    pub tools_dir: PathBuf,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub bots: BotsConfig,
    #[serde(default)]
    pub consent: ConsentConfig,
    /// `[triggers.<id>]`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, TriggerConfig>")]
    pub triggers: BTreeMap<String, Spanned<TriggerConfig>>,
    /// `[variables]`: `{{ $name }}` in templates.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, VariableConfig>")]
    pub variables: BTreeMap<String, Spanned<VariableConfig>>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// `[location]`: which request headers carry the visitor's location.
    #[serde(default)]
    pub location: LocationHeaders,
}

/// `[bots]` (SPEC §9).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BotsConfig {
    /// Bots get no injected script, and their events are counted and dropped.
    pub skip_events: bool,
    /// The proxy answers known AI crawlers `403`.
    pub block_ai_crawlers: bool,
    /// Case-insensitive User-Agent substrings treated as bots.
    pub extra_user_agents: Vec<String>,
    /// Requests whose bot score (1 = surely automated … 99 = surely human,
    /// see `src/bots/score.rs`) is below this are bots, for `skip_events`,
    /// injection and `block_ai_crawlers` (Zaraz's "bot score threshold").
    #[serde(deserialize_with = "values::bot_score")]
    #[schemars(range(min = 1, max = 99))]
    pub score_threshold: u8,
}

impl Default for BotsConfig {
    fn default() -> Self {
        BotsConfig {
            skip_events: true,
            block_ai_crawlers: false,
            extra_user_agents: Vec::new(),
            score_threshold: crate::bots::score::DEFAULT_THRESHOLD,
        }
    }
}

/// `[consent]` (SPEC §9).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    pub enabled: bool,
    /// The cookie holding the visitor's choice (Zaraz's name by default).
    pub cookie: String,
    pub show_modal: bool,
    /// IAB TCF v2.2 mode: purposes come from the `euconsent-v2` TC string.
    pub tcf: bool,
    #[schemars(with = "Vec<PurposeConfig>")]
    pub purposes: Vec<Spanned<PurposeConfig>>,
    /// `[consent.texts.<lang>]`: the modal's own texts by language tag
    /// (`de`, `pt-BR`), over the built-in English, German, French and
    /// Spanish ones (`crate::consent::modal_texts`).
    pub texts: BTreeMap<String, ModalTexts>,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        ConsentConfig {
            enabled: false,
            cookie: "cf_consent".into(),
            show_modal: true,
            tcf: false,
            purposes: Vec::new(),
            texts: BTreeMap::new(),
        }
    }
}

/// The consent modal's texts in one language; a key left out falls back to
/// the built-in text of that language, else English.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModalTexts {
    /// The heading.
    pub title: Option<String>,
    /// The paragraph under the heading.
    pub intro: Option<String>,
    /// The buttons.
    pub accept_all: Option<String>,
    pub reject_all: Option<String>,
    pub save: Option<String>,
}

/// One consent purpose.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PurposeConfig {
    pub id: String,
    pub name: Text,
    #[serde(default)]
    pub description: Text,
    /// Before the visitor chooses (and Consent Mode v2's default).
    #[serde(default)]
    pub default: ConsentDefault,
    /// The Consent Mode v2 signals this purpose drives.
    #[serde(default)]
    pub consent_mode: Vec<ConsentSignal>,
    /// TCF mode: the IAB purposes (1-11, TCF v2.2) that must all have a
    /// legal basis: consent, or legitimate interest where listed in
    /// `tcf_legitimate_interest`. Spanned so `check` can point at a bad id.
    #[serde(default)]
    #[schemars(with = "Vec<u8>")]
    pub tcf_purposes: Vec<Spanned<u8>>,
    /// TCF mode: those of `tcf_purposes` for which legitimate interest (the
    /// purpose's LI transparency bit plus, for a tool with a vendor id, the
    /// vendor's LI bit) counts as well as consent. TCF v2.2 forbids LI for
    /// purposes 1, 3, 4, 5 and 6; `check` rejects them.
    #[serde(default)]
    #[schemars(with = "Vec<u8>")]
    pub tcf_legitimate_interest: Vec<Spanned<u8>>,
}

/// A text, or translations of it by language (`{ en = "…", de = "…" }`).
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Text {
    One(String),
    Translated(BTreeMap<String, String>),
}

impl Default for Text {
    fn default() -> Self {
        Text::One(String::new())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsentDefault {
    Granted,
    #[default]
    Denied,
}

/// Google Consent Mode v2 signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentSignal {
    AdStorage,
    AnalyticsStorage,
    AdUserData,
    AdPersonalization,
}

/// `[triggers.<id>]` (SPEC §7).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    #[schemars(with = "Vec<RuleConfig>")]
    pub rules: Vec<Spanned<RuleConfig>>,
    /// Zaraz's exclude rules: the trigger does not fire when one matches.
    #[serde(default)]
    #[schemars(with = "Vec<RuleConfig>")]
    pub exclude: Vec<Spanned<RuleConfig>>,
}

/// One rule: a match rule (`match`, `op`, `value`) or one client-side rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(rename = "match")]
    pub matches: Option<String>,
    pub op: Option<crate::rules::trigger::Op>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub value: Option<toml::Value>,
    pub click: Option<ClickConfig>,
    pub form_submit: Option<FormSubmitConfig>,
    pub timer: Option<TimerConfig>,
    pub scroll_depth: Option<ScrollDepthConfig>,
    pub element_visible: Option<ElementVisibleConfig>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClickConfig {
    pub css: Option<String>,
    pub xpath: Option<String>,
    #[serde(default)]
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FormSubmitConfig {
    pub css: String,
    #[serde(default)]
    pub validate: bool,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerConfig {
    #[serde(deserialize_with = "values::positive_u64")]
    #[schemars(range(min = 1))]
    pub interval_ms: u64,
    /// 0 = no limit.
    #[serde(default)]
    pub limit: u64,
}

/// `"45%"`, `"100px"`, or a list of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ScrollDepthConfig {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElementVisibleConfig {
    pub css: String,
}

/// A `[variables]` entry: a plain value, or `{ secret = "NAME" }` read from
/// the environment variable `TAGPROXY_SECRET_NAME`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum VariableConfig {
    Secret { secret: String },
    Plain(#[schemars(with = "serde_json::Value")] toml::Value),
}

/// `[delivery]` (SPEC §2, §11).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub backend: DeliveryBackend,
    /// Default: `spool` under `data_dir`.
    pub spool_dir: Option<PathBuf>,
    /// Past this size the collector answers 503 (with `Retry-After`).
    #[serde(deserialize_with = "values::positive_u64")]
    #[schemars(range(min = 1))]
    pub spool_max_bytes: u64,
    pub nats_url: String,
    #[serde(deserialize_with = "values::positive_u64")]
    #[schemars(range(min = 1))]
    pub timeout_ms: u64,
    #[serde(deserialize_with = "values::positive_u32")]
    #[schemars(range(min = 1))]
    pub max_attempts: u32,
    #[serde(deserialize_with = "values::positive_u64")]
    #[schemars(range(min = 1))]
    pub max_age_s: u64,
    #[serde(deserialize_with = "values::positive_u32")]
    #[schemars(range(min = 1))]
    pub concurrency_per_tool: u32,
    /// First retry waits up to this long; each next one twice as long.
    #[serde(deserialize_with = "values::positive_u64")]
    #[schemars(range(min = 1))]
    pub retry_base_ms: u64,
    /// No wait between attempts is longer (`Retry-After` included).
    #[serde(deserialize_with = "values::positive_u64")]
    #[schemars(range(min = 1))]
    pub retry_max_ms: u64,
    /// Batched delivery (SPEC §8): how long, in milliseconds, a delivery to a
    /// destination with a batch API waits for others to share its request
    /// (0: only what is already queued is joined).
    pub batch_linger_ms: u64,
    /// Batched delivery: at most this many deliveries per request, below the
    /// destination's own limit (Meta's 1,000). Unset: the destination's limit.
    #[schemars(range(min = 1))]
    pub batch_max_events: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryBackend {
    Spool,
    Nats,
    Memory,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            backend: DeliveryBackend::Spool,
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            nats_url: "nats://127.0.0.1:4222".into(),
            timeout_ms: 10_000,
            max_attempts: 8,
            max_age_s: 86_400,
            concurrency_per_tool: 32,
            retry_base_ms: 1000,
            retry_max_ms: 300_000,
            batch_linger_ms: 5,
            batch_max_events: None,
        }
    }
}

/// `[location]`: request headers that carry `system.device.location.*`,
/// believed only from `trusted_proxies`. Defaults are Cloudflare's
/// visitor-location headers.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct LocationHeaders {
    pub country: String,
    pub city: String,
    pub continent: String,
    pub region: String,
    pub region_code: String,
    pub postal_code: String,
    pub timezone: String,
    pub latitude: String,
    pub longitude: String,
}

impl Default for LocationHeaders {
    fn default() -> Self {
        LocationHeaders {
            country: "cf-ipcountry".into(),
            city: "cf-ipcity".into(),
            continent: "cf-ipcontinent".into(),
            region: "cf-region".into(),
            region_code: "cf-region-code".into(),
            postal_code: "cf-postal-code".into(),
            timezone: "cf-timezone".into(),
            latitude: "cf-iplatitude".into(),
            longitude: "cf-iplongitude".into(),
        }
    }
}

impl LocationHeaders {
    /// (Zaraz key, header name) pairs.
    pub fn pairs(&self) -> [(&'static str, &str); 9] {
        [
            ("country", &self.country),
            ("city", &self.city),
            ("continent", &self.continent),
            ("region", &self.region),
            ("regionCode", &self.region_code),
            ("postalCode", &self.postal_code),
            ("timezone", &self.timezone),
            ("latitude", &self.latitude),
            ("longitude", &self.longitude),
        ]
    }
}

fn default_tools_dir() -> PathBuf {
    PathBuf::from("tools")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// `[server]`: where tagproxy listens and what it fronts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: ListenAddr,
    pub upstream: UpstreamUrl,
    pub prefix: PathPrefix,
    pub admin_listen: ListenAddr,
    pub trusted_proxies: TrustedProxies,
    #[serde(deserialize_with = "values::positive_u64")]
    #[schemars(range(min = 1))]
    pub max_event_bytes: u64,
    #[serde(deserialize_with = "values::positive_u64")]
    #[schemars(range(min = 1))]
    pub upstream_timeout_ms: u64,
    /// The `Host` the origin sees; `None` keeps the visitor's.
    pub upstream_host: UpstreamHost,
    /// PEM file of extra CAs trusted for an https upstream, besides the
    /// system roots; `""` = none. Relative to the config file.
    #[schemars(with = "String")]
    pub upstream_ca: Spanned<String>,
    /// The certificates of `upstream_ca`, read and parsed by [`parse`].
    #[serde(skip)]
    #[schemars(skip)]
    pub upstream_ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// SNI and certificate name for an https upstream; `None` = the URL's host.
    pub upstream_sni: TlsServerName,
    /// A connection that has not sent a complete request head this long
    /// after it opened (or after its first byte following an idle spell) is
    /// closed, milliseconds.
    #[serde(deserialize_with = "values::positive_u64")]
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request in flight and no bytes
    /// received this long is closed, milliseconds.
    #[serde(deserialize_with = "values::positive_u64")]
    pub idle_timeout_ms: u64,
    /// Open client connections at most; past it, accepting pauses.
    #[serde(deserialize_with = "values::positive_u32")]
    pub max_connections: u32,
    /// Zaraz's `initPath`: where pages that load Zaraz themselves ("load
    /// manually") fetch it, when not the default `/cdn-cgi/zaraz/i.js`
    /// (which is always served). Such a page gets the client script there
    /// and is not injected a second time. `None` = the default only.
    pub zaraz_init_path: Option<RoutePath>,
    /// Zaraz's `eventsApiPath`: one more path of the HTTP Events API
    /// (`{prefix}/api/events`), for servers written for Zaraz. The same
    /// token (`events:write`) is needed there. `None` = no extra path.
    pub zaraz_events_api_path: Option<RoutePath>,
    /// `[server.tls]`: HTTPS on its own listener; absent = no TLS.
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]` (SPEC §2): HTTPS on its own listener, HTTP/1.1 and h2 by
/// ALPN, with a certificate from files (`cert` + `key`) or from ACME
/// (`acme_domains`), never both.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Where HTTPS is served, `IP:PORT`.
    pub listen: ListenAddr,
    /// PEM file with the certificate chain (leaf first); relative to the
    /// config file. Reloaded within 10 s of a change.
    #[schemars(with = "String")]
    pub cert: Spanned<String>,
    /// PEM file with the private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    #[schemars(with = "String")]
    pub key: Spanned<String>,
    /// Domains to obtain a certificate for by ACME (TLS-ALPN-01), instead of
    /// `cert` / `key`; kept in `data_dir/acme`.
    #[schemars(with = "Vec<String>")]
    pub acme_domains: Spanned<Vec<String>>,
    /// Contact address for the ACME account; `""` = none.
    pub acme_email: String,
    /// The ACME directory URL; `""` = Let's Encrypt production.
    pub acme_directory: String,
    /// PEM file of an extra root trusted for the ACME directory's own TLS
    /// (a local test CA such as pebble's); `""` = the system roots only.
    #[schemars(with = "String")]
    pub acme_ca: Spanned<String>,
    /// The plain `listen` answers `308` to the https URL, except requests a
    /// trusted proxy marked `X-Forwarded-Proto: https`.
    pub redirect_http: bool,
    /// The certificate and key of `cert` / `key`, read and checked by
    /// [`parse`].
    #[serde(skip)]
    #[schemars(skip)]
    pub loaded: Option<crate::tls::LoadedCert>,
    /// The certificates of `acme_ca`, read and parsed by [`parse`].
    #[serde(skip)]
    #[schemars(skip)]
    pub acme_ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: ListenAddr("0.0.0.0:8443".parse().unwrap()),
            cert: Spanned::new(0..0, String::new()),
            key: Spanned::new(0..0, String::new()),
            acme_domains: Spanned::new(0..0, Vec::new()),
            acme_email: String::new(),
            acme_directory: String::new(),
            acme_ca: Spanned::new(0..0, String::new()),
            redirect_http: false,
            loaded: None,
            acme_ca_certs: Vec::new(),
        }
    }
}

impl TlsConfig {
    /// The certificate comes from ACME rather than from files.
    pub fn acme(&self) -> bool {
        !self.acme_domains.get_ref().is_empty()
    }

    /// `cert` and `key` resolved against the config file at `config_path`.
    pub fn files(&self, config_path: &Path) -> (PathBuf, PathBuf) {
        (
            relative_to(config_path, self.cert.get_ref()),
            relative_to(config_path, self.key.get_ref()),
        )
    }
}

/// `file` (from the config at `config_path`) resolved against the config
/// file's folder.
pub fn relative_to(config_path: &Path, file: &str) -> PathBuf {
    let file = Path::new(file);
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        config_path.parent().unwrap_or(Path::new("")).join(file)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ListenAddr("0.0.0.0:8080".parse().unwrap()),
            upstream: UpstreamUrl::parse("http://127.0.0.1:3000").unwrap(),
            prefix: PathPrefix("/_tagproxy".into()),
            admin_listen: ListenAddr("127.0.0.1:9090".parse().unwrap()),
            trusted_proxies: TrustedProxies(vec!["127.0.0.1/32".parse().unwrap()]),
            max_event_bytes: 65536,
            upstream_timeout_ms: 30000,
            upstream_host: UpstreamHost::default(),
            upstream_ca: Spanned::new(0..0, String::new()),
            upstream_ca_certs: Vec::new(),
            upstream_sni: TlsServerName::default(),
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 10_000,
            zaraz_init_path: None,
            zaraz_events_api_path: None,
            tls: None,
        }
    }
}

/// `[settings]`: Zaraz's settings page, with the same meaning (SPEC §2).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub auto_inject: bool,
    pub inject_iframes: bool,
    pub auto_pageview: bool,
    pub ecommerce: bool,
    pub data_layer: bool,
    pub spa: bool,
    pub trim_url_query: bool,
    pub remove_url_hash: bool,
    pub trim_ip: bool,
    pub hide_ip: bool,
    pub clean_user_agent: bool,
    pub hide_external_referrer: bool,
    pub cookie_domain: String,
    pub debug_key: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            auto_inject: true,
            inject_iframes: false,
            auto_pageview: true,
            ecommerce: true,
            data_layer: false,
            spa: true,
            trim_url_query: false,
            remove_url_hash: false,
            trim_ip: false,
            hide_ip: false,
            clean_user_agent: false,
            hide_external_referrer: false,
            cookie_domain: String::new(),
            debug_key: String::new(),
        }
    }
}

/// One problem found in a config file, printable as `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl Problem {
    /// A problem at byte `offset` of `text`, the contents of `file`.
    pub fn at(file: &Path, text: &str, offset: usize, message: impl Into<String>) -> Problem {
        let (line, col) = line_col(text, offset);
        Problem {
            file: file.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }

    /// A problem from a TOML parse error of `text`.
    pub fn from_toml(file: &Path, text: &str, e: &toml::de::Error) -> Problem {
        Problem::at(
            file,
            text,
            e.span().map_or(0, |s| s.start),
            e.message().trim(),
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// The problems that kept a config from loading.
#[derive(Debug)]
pub struct ConfigError(pub Vec<Problem>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A loaded config plus where it came from (relative paths resolve against it).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    /// The file's text, for locating problems found after parsing.
    pub text: String,
    pub config: Config,
    /// Non-fatal remarks for `check` (e.g. sections not applied yet).
    pub warnings: Vec<String>,
}

impl Loaded {
    /// `data_dir` resolved against the config file's folder.
    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.config.data_dir)
    }

    /// `tools_dir` resolved against the config file's folder.
    pub fn tools_dir(&self) -> PathBuf {
        self.resolve(&self.config.tools_dir)
    }

    /// `delivery.spool_dir` resolved against the config file's folder.
    pub fn spool_dir(&self) -> PathBuf {
        match &self.config.delivery.spool_dir {
            Some(dir) => self.resolve(dir),
            None => self.data_dir().join("spool"),
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            return p.to_path_buf();
        }
        self.path
            .parent()
            .map(|d| d.join(p))
            .unwrap_or_else(|| p.to_path_buf())
    }
}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(vec![Problem {
            file: path.to_path_buf(),
            line: 1,
            col: 1,
            message: format!("cannot read config: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Parses config text; `path` is only used in messages and for relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
    let mut config: Config = toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        ConfigError(vec![Problem {
            file: path.to_path_buf(),
            line,
            col,
            message: e.message().trim().to_string(),
        }])
    })?;
    let mut warnings = Vec::new();
    upstream_tls(path, text, &mut config.server, &mut warnings)?;
    zaraz_paths(path, text, &config.server)?;
    server_tls(path, text, &mut config.server)?;
    // SPEC §10: the admin listener is never public by default; off loopback
    // its health and metrics need a token too, but say so.
    if !config.server.admin_listen.0.ip().is_loopback() {
        let at = text.find("admin_listen").unwrap_or(0);
        warnings.push(
            Problem::at(
                path,
                text,
                at,
                format!(
                    "admin_listen {} is not a loopback address: the admin API is reachable from the network (every /admin call needs a token; /metrics and /readyz details need metrics:read or events:read)",
                    config.server.admin_listen.0
                ),
            )
            .to_string(),
        );
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        text: text.to_string(),
        config,
        warnings,
    })
}

/// Reads `upstream_ca` and warns about TLS keys that an `http://` upstream
/// ignores.
fn upstream_tls(
    path: &Path,
    text: &str,
    server: &mut ServerConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let ca = &server.upstream_ca;
    if !ca.get_ref().is_empty() {
        let at = ca.span().start;
        let file = Path::new(ca.get_ref());
        let file = if file.is_absolute() {
            file.to_path_buf()
        } else {
            path.parent().unwrap_or(Path::new("")).join(file)
        };
        let problem = |m: String| ConfigError(vec![Problem::at(path, text, at, m)]);
        let pem = std::fs::read(&file)
            .map_err(|e| problem(format!("upstream_ca: cannot read {}: {e}", file.display())))?;
        server.upstream_ca_certs = read_pem_certificates(&pem)
            .map_err(|e| problem(format!("upstream_ca: {}: {e}", file.display())))?;
    }
    if !server.upstream.is_https() {
        for (key, set) in [
            ("upstream_ca", !server.upstream_ca.get_ref().is_empty()),
            ("upstream_sni", server.upstream_sni.0.is_some()),
        ] {
            if set {
                let at = find_key(text, "server", key).unwrap_or(0);
                warnings.push(
                    Problem::at(
                        path,
                        text,
                        at,
                        format!("{key} has no effect: the upstream is http://, not https://"),
                    )
                    .to_string(),
                );
            }
        }
    }
    Ok(())
}

/// The Zaraz-compatible paths (SPEC §3) must be reachable: not under
/// `prefix` (whose routes would shadow them) and not one of the fixed
/// Zaraz paths or each other.
fn zaraz_paths(path: &Path, text: &str, server: &ServerConfig) -> Result<(), ConfigError> {
    let prefix = server.prefix.0.as_str();
    let mut taken: Vec<(&str, &str)> = vec![
        ("the Zaraz loader path", crate::proxy::ZARAZ_LOADER_PATH),
        ("the Zaraz track path", crate::proxy::ZARAZ_TRACK_PATH),
    ];
    for (key, value) in [
        ("zaraz_init_path", &server.zaraz_init_path),
        ("zaraz_events_api_path", &server.zaraz_events_api_path),
    ] {
        let Some(RoutePath(p)) = value else { continue };
        let at = find_key(text, "server", key).unwrap_or(0);
        let problem = |m: String| ConfigError(vec![Problem::at(path, text, at, m)]);
        if p == prefix || p.strip_prefix(prefix).is_some_and(|r| r.starts_with('/')) {
            return Err(problem(format!(
                "{key} {p:?} is under prefix {prefix:?}: choose a path outside it"
            )));
        }
        if let Some((what, _)) = taken.iter().find(|(_, t)| *t == p) {
            return Err(problem(format!("{key} {p:?} is already {what}")));
        }
        taken.push((key, p));
    }
    Ok(())
}

/// Checks `[server.tls]`: a certificate source (files or ACME, not both),
/// and reads the files (readable, PEM, the key matches the certificate,
/// valid now) so `check` and a reload find what serving would.
fn server_tls(path: &Path, text: &str, server: &mut ServerConfig) -> Result<(), ConfigError> {
    let Some(tls) = server.tls.as_mut() else {
        return Ok(());
    };
    let mut problems = Vec::new();
    let key_at = |key: &str| find_key(text, "server.tls", key).unwrap_or(0);
    let files = !tls.cert.get_ref().is_empty() || !tls.key.get_ref().is_empty();
    if files && tls.acme() {
        problems.push(Problem::at(
            path,
            text,
            tls.acme_domains.span().start,
            "acme_domains and cert/key are both set: choose one certificate source",
        ));
    } else if !files && !tls.acme() {
        problems.push(Problem::at(
            path,
            text,
            find_table(text, "server.tls").unwrap_or(0),
            "[server.tls] needs cert and key, or acme_domains",
        ));
    } else if files {
        if tls.cert.get_ref().is_empty() {
            problems.push(Problem::at(
                path,
                text,
                tls.key.span().start,
                "key is set but cert is not",
            ));
        } else if tls.key.get_ref().is_empty() {
            problems.push(Problem::at(
                path,
                text,
                tls.cert.span().start,
                "cert is set but key is not",
            ));
        } else {
            let (cert, key) = tls.files(path);
            match crate::tls::LoadedCert::read(&cert, &key) {
                Ok(loaded) => tls.loaded = Some(loaded),
                Err(e) => {
                    let at = match e.file {
                        crate::tls::Which::Cert => tls.cert.span().start,
                        crate::tls::Which::Key => tls.key.span().start,
                    };
                    problems.push(Problem::at(path, text, at, e.message));
                }
            }
        }
    } else {
        for d in tls.acme_domains.get_ref() {
            if rustls::pki_types::DnsName::try_from(d.as_str()).is_err() {
                problems.push(Problem::at(
                    path,
                    text,
                    tls.acme_domains.span().start,
                    format!("acme_domains: {d:?} is not a DNS name"),
                ));
            }
        }
        if !tls.acme_directory.is_empty() {
            match url::Url::parse(&tls.acme_directory) {
                Ok(u) if u.scheme() == "https" => {}
                _ => problems.push(Problem::at(
                    path,
                    text,
                    key_at("acme_directory"),
                    format!(
                        "acme_directory {:?} is not an https:// URL",
                        tls.acme_directory
                    ),
                )),
            }
        }
        if !tls.acme_ca.get_ref().is_empty() {
            let file = relative_to(path, tls.acme_ca.get_ref());
            match std::fs::read(&file) {
                Ok(pem) => match read_pem_certificates(&pem) {
                    Ok(certs) => tls.acme_ca_certs = certs,
                    Err(e) => problems.push(Problem::at(
                        path,
                        text,
                        tls.acme_ca.span().start,
                        format!("acme_ca: {}: {e}", file.display()),
                    )),
                },
                Err(e) => problems.push(Problem::at(
                    path,
                    text,
                    tls.acme_ca.span().start,
                    format!("acme_ca: cannot read {}: {e}", file.display()),
                )),
            }
        }
    }
    if tls.listen.0 == server.listen.0 && tls.listen.0.port() != 0 {
        problems.push(Problem::at(
            path,
            text,
            key_at("listen"),
            "[server.tls] listen is the same address as [server] listen",
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError(problems))
    }
}

/// Byte offset of the `[table]` header line in `text`.
fn find_table(text: &str, table: &str) -> Option<usize> {
    let header = format!("[{table}]");
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.trim_end().starts_with(&header) {
            return Some(offset + line.len() - trimmed.len());
        }
        offset += line.len();
    }
    None
}

/// The certificates of a PEM file; an error when it holds none or one does
/// not parse.
pub fn read_pem_certificates(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into());
    }
    for cert in &certs {
        rustls::RootCertStore::empty()
            .add(cert.clone())
            .map_err(|e| format!("a certificate does not parse: {e}"))?;
    }
    Ok(certs)
}

/// Byte offset of `key = ` inside `[table]` of `text`, for pointing at a key
/// whose value was fine on its own.
fn find_key(text: &str, table: &str, key: &str) -> Option<usize> {
    let header = format!("[{table}]");
    let mut offset = 0;
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            inside = trimmed.trim_end().starts_with(&header);
        } else if inside {
            if let Some(rest) = trimmed.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(offset + line.len() - trimmed.len());
                }
            }
        }
        offset += line.len();
    }
    None
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..text.floor_char_boundary(at)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(Path::new("t.toml"), text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn empty_file_gives_spec_defaults() {
        let l = parse(Path::new("t.toml"), "").unwrap();
        assert_eq!(l.config.server.prefix.0, "/_tagproxy");
        assert_eq!(l.config.server.upstream.authority(), "127.0.0.1:3000");
        assert_eq!(l.config.server.max_event_bytes, 65536);
        assert!(l.config.settings.auto_inject);
        assert!(!l.config.settings.inject_iframes);
    }

    #[test]
    fn unknown_key_points_at_the_key() {
        let p = problems("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n");
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("t.toml:3:1: unknown field `lisen`"),
            "{p:?}"
        );
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let p = problems("[server]\nupstream = \"ftp://x\"\n");
        assert!(p[0].starts_with("t.toml:2:12: "), "{p:?}");
        assert!(p[0].contains("http://"), "{p:?}");
        let p = problems("[settings]\nauto_inject = \"yes\"\n");
        assert!(p[0].starts_with("t.toml:2:15: invalid type"), "{p:?}");
        let p = problems("[server]\nlisten = \"nowhere\"\n");
        assert!(p[0].starts_with("t.toml:2:10: "), "{p:?}");
        let p = problems("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n");
        assert!(p[0].starts_with("t.toml:2:19: "), "{p:?}");
        let p = problems("[server]\nprefix = \"nope\"\n");
        assert!(p[0].contains("must start with '/'"), "{p:?}");
        let p = problems("[server]\nupstream_timeout_ms = 0\n");
        assert!(p[0].starts_with("t.toml:2:23: "), "{p:?}");
    }

    /// `[bots] score_threshold` is a bot score, 1..=99; 30 by default.
    #[test]
    fn score_threshold_is_a_bot_score() {
        let d = parse(Path::new("t.toml"), "").unwrap();
        assert_eq!(d.config.bots.score_threshold, 30);
        let ok = parse(Path::new("t.toml"), "[bots]\nscore_threshold = 50\n").unwrap();
        assert_eq!(ok.config.bots.score_threshold, 50);
        for bad in ["0", "100", "-1"] {
            let p = problems(&format!("[bots]\nscore_threshold = {bad}\n"));
            assert!(p[0].starts_with("t.toml:2:19: "), "{bad}: {p:?}");
        }
        let p = problems("[bots]\nscore_threshold = 100\n");
        assert!(p[0].contains("between 1 and 99"), "{p:?}");
    }

    /// Zaraz's `initPath` / `eventsApiPath` (SPEC §3): valid paths outside
    /// the prefix, distinct from Zaraz's fixed paths and each other.
    #[test]
    fn zaraz_paths_are_checked() {
        let ok = parse(
            Path::new("t.toml"),
            "[server]\nzaraz_init_path = \"/assets/z/init.js\"\nzaraz_events_api_path = \"/api/zaraz-events\"\n",
        )
        .unwrap();
        let server = &ok.config.server;
        assert_eq!(
            server.zaraz_init_path.as_ref().unwrap().0,
            "/assets/z/init.js"
        );
        assert_eq!(
            server.zaraz_events_api_path.as_ref().unwrap().0,
            "/api/zaraz-events"
        );
        let p = problems("[server]\nzaraz_init_path = \"init.js\"\n");
        assert!(p[0].starts_with("t.toml:2:19: invalid path"), "{p:?}");
        let p = problems("[server]\nzaraz_init_path = \"/a b.js\"\n");
        assert!(p[0].contains("only letters"), "{p:?}");
        let p = problems("[server]\nzaraz_init_path = \"/_tagproxy/i.js\"\n");
        assert_eq!(
            p,
            ["t.toml:2:1: zaraz_init_path \"/_tagproxy/i.js\" is under prefix \"/_tagproxy\": choose a path outside it"]
        );
        let p = problems("[server]\nzaraz_events_api_path = \"/cdn-cgi/zaraz/t\"\n");
        assert!(p[0].contains("is already the Zaraz track path"), "{p:?}");
        let p = problems("[server]\nzaraz_init_path = \"/z\"\nzaraz_events_api_path = \"/z\"\n");
        assert!(
            p[0].starts_with("t.toml:3:1: zaraz_events_api_path \"/z\" is already zaraz_init_path"),
            "{p:?}"
        );
    }

    #[test]
    fn delivery_keys_are_checked_and_spool_dir_follows_data_dir() {
        let p = problems("[delivery]\nbackend = \"kafka\"\n");
        assert!(
            p[0].starts_with("t.toml:2:11: unknown variant `kafka`"),
            "{p:?}"
        );
        let p = problems("[delivery]\nspool_max_bytes = 0\n");
        assert_eq!(p, ["t.toml:2:19: must be greater than 0"]);
        let p = problems("[delivery]\nretry_max_ms = \"x\"\n");
        assert!(p[0].starts_with("t.toml:2:16: invalid type"), "{p:?}");
        let l = parse(Path::new("/etc/tp/t.toml"), "data_dir = \"/var/lib/tp\"\n").unwrap();
        assert_eq!(l.spool_dir(), Path::new("/var/lib/tp/spool"));
        let l = parse(
            Path::new("/etc/tp/t.toml"),
            "[delivery]\nspool_dir = \"q\"\n",
        )
        .unwrap();
        assert_eq!(l.spool_dir(), Path::new("/etc/tp/q"));
    }

    #[test]
    fn a_non_loopback_admin_listener_is_a_warning() {
        let l = parse(Path::new("t.toml"), "").unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let l = parse(
            Path::new("t.toml"),
            "[server]\nadmin_listen = \"0.0.0.0:9090\"\n",
        )
        .unwrap();
        assert_eq!(l.warnings.len(), 1);
        assert!(
            l.warnings[0].starts_with("t.toml:2:1: admin_listen 0.0.0.0:9090 is not a loopback"),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_col("x", 0), (1, 1));
    }
}
