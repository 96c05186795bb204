//! Account-owned admin tokens (SPEC §10).
//!
//! A token belongs to the deployment, not to a person: it has a name, a set
//! of [`Scope`]s, a creation time and an optional expiry, and anyone holding
//! `tokens:write` can roll or revoke it, so a service keeps working when the
//! person who set it up leaves.
//!
//! Secrets look like `tpat_<43 base62 chars><6 base62 chars>`: 43 uniformly
//! random base62 characters carry 256 bits from the operating system's
//! generator, and the last six are a CRC-32 of everything before them, so a
//! secret scanner (or [`parse_secret`]) can tell a real token from a typo
//! without asking the store, the way GitHub's `ghp_` tokens work. Only the
//! SHA-256 of a secret is stored, and comparisons run in constant time.
//!
//! The store is one JSON file, `data_dir/tokens.json`, written atomically
//! (temporary file, `fsync`, rename) under an exclusive lock on
//! `data_dir/tokens.lock`, so the CLI and a running server can change it at
//! the same time. The server re-reads it whenever the file changes, so a
//! rolled or revoked secret stops working at once.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do. Serialized as the names in SPEC §10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// `GET /admin/config`, `GET /admin/tools/{id}`.
    #[serde(rename = "config:read")]
    ConfigRead,
    /// `POST /admin/reload`, `PUT`/`DELETE /admin/tools/{id}`.
    #[serde(rename = "config:write")]
    ConfigWrite,
    /// `GET /admin/events`, `{prefix}/debug` for every visitor.
    #[serde(rename = "events:read")]
    EventsRead,
    /// `POST {prefix}/api/events`.
    #[serde(rename = "events:write")]
    EventsWrite,
    /// Create, list, roll and revoke tokens (never wider than its own scopes).
    #[serde(rename = "tokens:write")]
    TokensWrite,
    /// `/metrics` and `/readyz` details when `admin_listen` is not loopback.
    #[serde(rename = "metrics:read")]
    MetricsRead,
}

impl Scope {
    /// Every scope, in the order they are listed.
    pub const ALL: [Scope; 6] = [
        Scope::ConfigRead,
        Scope::ConfigWrite,
        Scope::EventsRead,
        Scope::EventsWrite,
        Scope::TokensWrite,
        Scope::MetricsRead,
    ];

    /// The scope's name, e.g. `config:read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ConfigRead => "config:read",
            Scope::ConfigWrite => "config:write",
            Scope::EventsRead => "events:read",
            Scope::EventsWrite => "events:write",
            Scope::TokensWrite => "tokens:write",
            Scope::MetricsRead => "metrics:read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| {
                let names: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope {s:?} (known: {})", names.join(", "))
            })
    }
}

/// Parses a comma-separated scope list (`config:read,events:write`).
///
/// # Errors
/// An unknown name, or an empty list.
pub fn parse_scopes(list: &str) -> Result<BTreeSet<Scope>, String> {
    let scopes = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Scope::from_str)
        .collect::<Result<BTreeSet<_>, _>>()?;
    if scopes.is_empty() {
        return Err("a token needs at least one scope".into());
    }
    Ok(scopes)
}

/// One token as stored: everything but the secret, which exists only as its
/// SHA-256. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Public id (`tok_` and 12 base62 characters), used to roll and revoke.
    pub id: String,
    /// Operator-chosen name, unique among the store's tokens; written to the
    /// audit log with every call.
    pub name: String,
    pub scopes: BTreeSet<Scope>,
    pub created_ms: u64,
    /// When the current secret was issued (creation or last roll).
    pub rolled_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_ms: Option<u64>,
    /// Lower-case hex SHA-256 of the secret.
    sha256: String,
}

impl Token {
    /// Whether this token holds every scope in `scopes` (no escalation: a
    /// token may only create, roll or revoke tokens it covers).
    pub fn covers<'a>(&self, scopes: impl IntoIterator<Item = &'a Scope>) -> bool {
        scopes.into_iter().all(|s| self.scopes.contains(s))
    }

    /// Whether the token has expired at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }

    /// The token as a JSON object for listings (never the secret or hash).
    pub fn public_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "scopes": self.scopes,
            "created_ms": self.created_ms,
            "rolled_ms": self.rolled_ms,
            "expires_ms": self.expires_ms,
            "last_used_ms": self.last_used_ms,
        })
    }
}

/// A freshly issued secret. Shown once; its `Debug` hides it.
pub struct Secret(String);

impl Secret {
    /// The secret, to print or send once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Prefix of every secret, so leaked ones are easy to find.
pub const SECRET_PREFIX: &str = "tpat_";
const SECRET_RANDOM_CHARS: usize = 43;
const SECRET_CHECK_CHARS: usize = 6;
const SECRET_LEN: usize = SECRET_PREFIX.len() + SECRET_RANDOM_CHARS + SECRET_CHECK_CHARS;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Longest token name accepted.
pub const MAX_NAME_CHARS: usize = 100;
/// Uses closer together than this are not written to disk again.
const LAST_USED_PRECISION_MS: u64 = 60_000;

/// `n` base62 characters from the operating system's random generator
/// (rejection sampling keeps them uniform).
fn random_base62(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).expect("the operating system's random generator failed");
        for b in buf {
            // 248 = 4 × 62: bytes above it would favour the first characters.
            if b < 248 && out.len() < n {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    out
}

fn base62_fixed(mut n: u64, width: usize) -> String {
    let mut chars = vec![b'0'; width];
    for c in chars.iter_mut().rev() {
        *c = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(chars).expect("base62 is ASCII")
}

fn checksum(prefix_and_random: &str) -> String {
    base62_fixed(
        u64::from(crc32fast::hash(prefix_and_random.as_bytes())),
        SECRET_CHECK_CHARS,
    )
}

fn new_secret() -> Secret {
    let body = format!("{SECRET_PREFIX}{}", random_base62(SECRET_RANDOM_CHARS));
    let check = checksum(&body);
    Secret(body + &check)
}

/// Checks a presented secret's shape and checksum.
///
/// # Errors
/// [`AuthError::Malformed`] when the prefix, length, alphabet or checksum
/// is wrong.
pub fn parse_secret(secret: &str) -> Result<&str, AuthError> {
    let well_formed = secret.len() == SECRET_LEN
        && secret.starts_with(SECRET_PREFIX)
        && secret[SECRET_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
        && {
            let (body, check) = secret.split_at(SECRET_LEN - SECRET_CHECK_CHARS);
            checksum(body) == check
        };
    if well_formed {
        Ok(secret)
    } else {
        Err(AuthError::Malformed)
    }
}

fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a request was not allowed; [`AuthError::status`] is its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// Not a tagproxy token (prefix, length or checksum).
    Malformed,
    /// Well-formed but not in the store: never issued, rolled or revoked.
    Unknown,
    /// The token's expiry has passed.
    Expired { id: String, name: String },
    /// A valid token without the scope the call needs (`403`).
    Forbidden {
        id: String,
        name: String,
        needs: Scope,
    },
    /// The store cannot be read (fails closed, `500`).
    Store(String),
}

impl AuthError {
    /// `401` for a missing or invalid token, `403` for a missing scope,
    /// `500` when the store is unreadable.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AuthError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The token's id and name, when one was recognised.
    pub fn token(&self) -> Option<(&str, &str)> {
        match self {
            AuthError::Expired { id, name } | AuthError::Forbidden { id, name, .. } => {
                Some((id, name))
            }
            _ => None,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str("missing token: send Authorization: Bearer <token>"),
            AuthError::Malformed => f.write_str("malformed token"),
            AuthError::Unknown => f.write_str("invalid token (unknown, rolled or revoked)"),
            AuthError::Expired { name, .. } => write!(f, "token {name:?} has expired"),
            AuthError::Forbidden { name, needs, .. } => {
                write!(f, "token {name:?} lacks the scope {needs}")
            }
            AuthError::Store(e) => write!(f, "token store unreadable: {e}"),
        }
    }
}

/// Errors of the store's own operations (create, list, roll, revoke).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The file is not a token store (edited by hand?); `line:col` is 1-based.
    #[error("{}:{line}:{column}: not a valid token store: {message}", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("no token with id {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    tokens: Vec<Token>,
}

/// Identity of one version of the file, to notice changes cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> io::Result<Option<Stamp>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(Stamp {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&m),
            #[cfg(not(unix))]
            inode: 0,
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The token store under `data_dir`. Cheap to share; every method does its
/// own (small, blocking) file I/O.
pub struct TokenStore {
    path: PathBuf,
    lock_path: PathBuf,
    /// The last parsed version of the file, for [`TokenStore::authenticate`].
    cache: Mutex<Option<(Option<Stamp>, Vec<Token>)>>,
}

impl TokenStore {
    /// The store in `data_dir` (`tokens.json`); nothing is read yet.
    pub fn open(data_dir: &Path) -> TokenStore {
        TokenStore {
            path: data_dir.join("tokens.json"),
            lock_path: data_dir.join("tokens.lock"),
            cache: Mutex::new(None),
        }
    }

    /// Path of the store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every token, oldest first.
    ///
    /// # Errors
    /// The file cannot be read or is not a token store.
    pub fn list(&self) -> Result<Vec<Token>, StoreError> {
        Ok(self.read()?.tokens)
    }

    /// Issues a new token; the secret is returned once and never stored.
    ///
    /// # Errors
    /// An empty, too long or duplicate name, no scopes, or an I/O error.
    pub fn create(
        &self,
        name: &str,
        scopes: BTreeSet<Scope>,
        expires_in: Option<Duration>,
    ) -> Result<(Token, Secret), StoreError> {
        let name = valid_name(name)?;
        if scopes.is_empty() {
            return Err(StoreError::Invalid(
                "a token needs at least one scope".into(),
            ));
        }
        self.update(|file| {
            if file.tokens.iter().any(|t| t.name == name) {
                return Err(StoreError::Invalid(format!(
                    "a token named {name:?} already exists (roll it, or choose another name)"
                )));
            }
            let now = now_ms();
            let secret = new_secret();
            let token = Token {
                id: format!("tok_{}", random_base62(12)),
                name: name.to_string(),
                scopes,
                created_ms: now,
                rolled_ms: now,
                expires_ms: expires_in
                    .map(|d| now.saturating_add(d.as_millis().min(u64::MAX as u128) as u64)),
                last_used_ms: None,
                sha256: sha256_hex(secret.expose()),
            };
            file.tokens.push(token.clone());
            Ok((token, secret))
        })
    }

    /// Gives token `id` a new secret; the old one stops working at once.
    /// Name, scopes and expiry stay.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or an I/O error.
    pub fn roll(&self, id: &str) -> Result<(Token, Secret), StoreError> {
        self.update(|file| {
            let token = file
                .tokens
                .iter_mut()
                .find(|t| t.id == id)
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            let secret = new_secret();
            token.sha256 = sha256_hex(secret.expose());
            token.rolled_ms = now_ms();
            Ok((token.clone(), secret))
        })
    }

    /// Deletes token `id`; its secret stops working at once.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or an I/O error.
    pub fn revoke(&self, id: &str) -> Result<Token, StoreError> {
        self.update(|file| {
            let at = file
                .tokens
                .iter()
                .position(|t| t.id == id)
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            Ok(file.tokens.remove(at))
        })
    }

    /// Finds a token by id without changing anything.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or the file cannot be read.
    pub fn get(&self, id: &str) -> Result<Token, StoreError> {
        self.list()?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    /// Checks an `Authorization` header for a valid token holding `scope`,
    /// and records the use.
    ///
    /// # Errors
    /// See [`AuthError`]; every variant but `Forbidden` is a `401` or `500`.
    pub fn authorize(
        &self,
        header: Option<&HeaderValue>,
        scope: Scope,
    ) -> Result<Token, AuthError> {
        let secret = bearer(header)?;
        let token = self.authenticate(secret)?;
        if token.scopes.contains(&scope) {
            Ok(token)
        } else {
            Err(AuthError::Forbidden {
                id: token.id,
                name: token.name,
                needs: scope,
            })
        }
    }

    /// Finds the token a secret belongs to (any scope), and records the use.
    ///
    /// # Errors
    /// [`AuthError::Malformed`], `Unknown`, `Expired` or `Store`.
    pub fn authenticate(&self, secret: &str) -> Result<Token, AuthError> {
        let secret = parse_secret(secret)?;
        let hash = sha256_hex(secret);
        let token = {
            let tokens = self
                .current()
                .map_err(|e| AuthError::Store(e.to_string()))?;
            // Compare with every token, in constant time, so the answer's
            // timing says nothing about how much of a hash matched.
            let mut found = None;
            for t in tokens.iter() {
                if bool::from(t.sha256.as_bytes().ct_eq(hash.as_bytes())) {
                    found = Some(t.clone());
                }
            }
            found.ok_or(AuthError::Unknown)?
        };
        let now = now_ms();
        if token.expired_at(now) {
            return Err(AuthError::Expired {
                id: token.id,
                name: token.name,
            });
        }
        if token
            .last_used_ms
            .is_none_or(|used| now.saturating_sub(used) >= LAST_USED_PRECISION_MS)
        {
            if let Err(e) = self.touch(&token.id, now) {
                tracing::warn!(error = %e, token = %token.name, "cannot record the token's last use");
            }
        }
        Ok(token)
    }

    /// The parsed file, re-read when it changed since the last call.
    fn current(&self) -> Result<Vec<Token>, StoreError> {
        let now = stamp(&self.path).map_err(|e| self.io_error(e))?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, tokens)) = cache.as_ref() {
            if *seen == now {
                return Ok(tokens.clone());
            }
        }
        let tokens = self.read()?.tokens;
        *cache = Some((now, tokens.clone()));
        Ok(tokens)
    }

    fn touch(&self, id: &str, now: u64) -> Result<(), StoreError> {
        self.update(|file| {
            if let Some(t) = file.tokens.iter_mut().find(|t| t.id == id) {
                t.last_used_ms = Some(now);
            }
            Ok(())
        })
    }

    fn io_error(&self, source: io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn read(&self) -> Result<StoreFile, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(StoreFile {
                    version: 1,
                    tokens: Vec::new(),
                })
            }
            Err(e) => return Err(self.io_error(e)),
        };
        let file: StoreFile = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        if file.version != 1 {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                line: 1,
                column: 1,
                message: format!("unsupported version {}", file.version),
            });
        }
        for t in &file.tokens {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    line: 1,
                    column: 1,
                    message: format!("token {:?} has no valid sha256", t.id),
                });
            }
        }
        Ok(file)
    }

    /// Read-modify-write under the exclusive lock; the new file replaces the
    /// old atomically, so readers see one or the other, never a mix.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut StoreFile) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| self.io_error(e))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| self.io_error(e))?;
        lock.lock().map_err(|e| self.io_error(e))?;
        let mut file = self.read()?;
        let result = change(&mut file)?;
        let tmp = self
            .path
            .with_extension(format!("json.tmp.{}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut out = options.open(&tmp)?;
            let mut text = serde_json::to_string_pretty(&file).map_err(io::Error::other)?;
            text.push('\n');
            out.write_all(text.as_bytes())?;
            out.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io_error(e)
        })?;
        // `lock` is released when dropped.
        Ok(result)
    }
}

fn valid_name(name: &str) -> Result<&str, StoreError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StoreError::Invalid("a token needs a name".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(StoreError::Invalid(format!(
            "a token name has at most {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "a token name cannot hold control characters".into(),
        ));
    }
    Ok(name)
}

/// The secret of an `Authorization: Bearer <secret>` header.
///
/// # Errors
/// [`AuthError::Missing`] without the header, `Malformed` for another scheme.
pub fn bearer(header: Option<&HeaderValue>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
    let (scheme, secret) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    Ok(secret.trim())
}

/// Parses a duration such as `90d`, `12h`, `30m` or `45s`.
///
/// # Errors
/// No number, no unit, an unknown unit, zero, or an overflow.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: give a unit (s, m, h or d), e.g. 90d"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number then a unit, e.g. 90d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (s, m, h or d)")),
    };
    if n == 0 {
        return Err(format!("{text:?}: must be more than zero"));
    }
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?}: too long"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path());
        (dir, store)
    }

    fn scopes(list: &str) -> BTreeSet<Scope> {
        parse_scopes(list).unwrap()
    }

    fn header(secret: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {secret}")).unwrap()
    }

    #[test]
    fn secrets_have_the_prefix_256_random_bits_and_a_checksum() {
        let s = new_secret();
        let text = s.expose();
        assert_eq!(text.len(), SECRET_LEN);
        assert!(text.starts_with("tpat_"));
        assert_eq!(parse_secret(text), Ok(text));
        // 43 base62 characters carry at least 256 bits.
        assert!((SECRET_RANDOM_CHARS as f64) * 62f64.log2() >= 256.0);
        // One character changed: the checksum catches it.
        let mut typo = text.to_string().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(parse_secret(&typo), Err(AuthError::Malformed));
        assert_ne!(new_secret().expose(), text);
        assert_eq!(format!("{s:?}"), "Secret(…)");
    }

    #[test]
    fn random_base62_uses_the_whole_alphabet_evenly() {
        let sample = random_base62(62 * 400);
        let mut counts = [0usize; 62];
        for b in sample.bytes() {
            counts[BASE62.iter().position(|c| *c == b).unwrap()] += 1;
        }
        // Each character is expected 400 times. `b % 62` over all 256 byte
        // values would give the first 8 characters 5/4 of their share:
        // ~3,840 instead of 3,200 (σ ≈ 57) for the eight together.
        let first_eight: usize = counts[..8].iter().sum();
        assert!(first_eight < 3_550, "biased: {first_eight} ({counts:?})");
        assert!(counts.iter().all(|c| *c > 250), "{counts:?}");
    }

    #[test]
    fn lifecycle_create_use_roll_revoke() {
        let (_dir, store) = store();
        let (token, secret) = store
            .create("deploy bot", scopes("config:read,events:write"), None)
            .unwrap();
        assert!(token.id.starts_with("tok_"));
        let used = store
            .authorize(Some(&header(secret.expose())), Scope::EventsWrite)
            .unwrap();
        assert_eq!(used.name, "deploy bot");
        assert!(store.get(&token.id).unwrap().last_used_ms.is_some());
        assert_eq!(
            store
                .authorize(Some(&header(secret.expose())), Scope::TokensWrite)
                .unwrap_err()
                .status(),
            StatusCode::FORBIDDEN
        );

        let (rolled, new) = store.roll(&token.id).unwrap();
        assert_eq!(
            (rolled.id.as_str(), rolled.scopes.clone()),
            (token.id.as_str(), token.scopes.clone())
        );
        assert_eq!(
            store.authenticate(secret.expose()).unwrap_err(),
            AuthError::Unknown
        );
        assert!(store.authenticate(new.expose()).is_ok());

        store.revoke(&token.id).unwrap();
        assert_eq!(
            store.authenticate(new.expose()).unwrap_err(),
            AuthError::Unknown
        );
        assert!(matches!(
            store.revoke(&token.id),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.roll("tok_nope"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn a_second_store_on_the_same_dir_sees_changes_at_once() {
        // The CLI and the server are two processes with two stores.
        let (dir, cli) = store();
        let server = TokenStore::open(dir.path());
        let (token, secret) = cli.create("ci", scopes("config:read"), None).unwrap();
        assert!(server.authenticate(secret.expose()).is_ok());
        cli.revoke(&token.id).unwrap();
        assert_eq!(
            server.authenticate(secret.expose()).unwrap_err(),
            AuthError::Unknown
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let (_dir, store) = store();
        let (token, secret) = store
            .create(
                "short",
                scopes("config:read"),
                Some(Duration::from_millis(1)),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            store.authenticate(secret.expose()).unwrap_err(),
            AuthError::Expired {
                id: token.id,
                name: "short".into()
            }
        );
    }

    #[test]
    fn only_the_hash_is_on_disk() {
        let (dir, store) = store();
        let (_, secret) = store.create("a", scopes("events:read"), None).unwrap();
        let text = fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(!text.contains(secret.expose()));
        assert!(!text.contains(&secret.expose()[5..20]));
        assert!(text.contains(&sha256_hex(secret.expose())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("tokens.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o077,
                0,
                "tokens.json is readable by others: {mode:o}"
            );
        }
    }

    #[test]
    fn bad_names_scopes_and_duplicates_are_refused() {
        let (_dir, store) = store();
        for name in ["", "  ", "a\nb", &"x".repeat(101)] {
            assert!(matches!(
                store.create(name, scopes("config:read"), None),
                Err(StoreError::Invalid(_))
            ));
        }
        assert!(parse_scopes("config:read,admin").is_err());
        assert!(parse_scopes(",").is_err());
        store.create("a", scopes("config:read"), None).unwrap();
        assert!(matches!(
            store.create("a", scopes("config:read"), None),
            Err(StoreError::Invalid(_))
        ));
        assert!(store.list().unwrap().len() == 1);
    }

    #[test]
    fn a_corrupt_file_is_an_error_with_its_position_and_fails_closed() {
        let (dir, store) = store();
        let (_, secret) = store.create("a", scopes("config:read"), None).unwrap();
        fs::write(
            dir.path().join("tokens.json"),
            "{\"version\": 1,\n  \"tokens\": [oops]}",
        )
        .unwrap();
        match store.list() {
            Err(StoreError::Corrupt { line, column, .. }) => assert_eq!((line, column), (2, 14)),
            other => panic!("{other:?}"),
        }
        let err = store.authenticate(secret.expose()).unwrap_err();
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // Nothing is written over a file we cannot read.
        assert!(store.create("b", scopes("config:read"), None).is_err());
        assert!(fs::read_to_string(dir.path().join("tokens.json"))
            .unwrap()
            .contains("oops"));
    }

    #[test]
    fn concurrent_creates_from_two_stores_lose_nothing() {
        let (dir, _) = store();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let store = TokenStore::open(&dir);
                    for j in 0..10 {
                        store
                            .create(
                                &format!("t{i}-{j}"),
                                parse_scopes("config:read").unwrap(),
                                None,
                            )
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(TokenStore::open(dir.path()).list().unwrap().len(), 40);
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer(None), Err(AuthError::Missing));
        let h = HeaderValue::from_static("Basic abc");
        assert_eq!(bearer(Some(&h)), Err(AuthError::Malformed));
        let h = HeaderValue::from_static("bearer  tpat_x ");
        assert_eq!(bearer(Some(&h)), Ok("tpat_x"));
        let (_dir, store) = store();
        assert_eq!(
            store.authorize(Some(&h), Scope::ConfigRead).unwrap_err(),
            AuthError::Malformed
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        for bad in ["", "90", "d", "0d", "9w", "-1d", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn covers_means_every_scope() {
        let (_dir, store) = store();
        let (t, _) = store
            .create("a", scopes("tokens:write,config:read"), None)
            .unwrap();
        assert!(t.covers(&scopes("config:read")));
        assert!(t.covers(&scopes("tokens:write,config:read")));
        assert!(!t.covers(&scopes("config:read,config:write")));
        assert!(!t.public_json().to_string().contains("sha256"));
    }
}
