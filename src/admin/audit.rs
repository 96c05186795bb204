//! The audit log (SPEC §10): every admin call and every token operation,
//! allowed or refused, as one JSON line in `data_dir/audit.jsonl`.
//!
//! A line holds the time, who (token id and name, or `cli` and the OS user),
//! from where, what (method, path, action), and how it ended (`result`,
//! HTTP status, a short detail). It never holds a secret: callers pass token
//! ids and names only, and [`AuditEntry::detail`] is cut and scrubbed of
//! anything shaped like a token secret.
//!
//! Lines are appended with `O_APPEND` in one `write`, so several processes
//! (the server and the CLI) can write at once without interleaving, and
//! synced, so an operation that answered is on record even after a crash.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::tokens::SECRET_PREFIX;

/// How an audited operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The caller was allowed and the operation succeeded.
    Allowed,
    /// Refused before anything happened: no token, bad token (`401`), or a
    /// missing scope / escalation (`403`).
    Refused,
    /// Allowed, but the operation failed (invalid input, I/O error).
    Failed,
}

/// One line of the audit log. Times are RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time: String,
    /// The token used, when one was recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
    /// The client's address, or `cli:<user>` for the command line.
    pub remote: String,
    /// HTTP method, or `CLI`.
    pub method: String,
    /// Request path, or the command line (`token roll tok_…`).
    pub path: String,
    /// What was attempted, e.g. `token.create`, `config.read`, `tools.put`.
    pub action: String,
    pub result: Outcome,
    /// The HTTP status answered (the CLI's operations have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it was refused or failed, or what it touched (the target token's
    /// id, a tool id). At most 300 characters, secrets masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEntry {
    /// An entry stamped now, for `action` on `method path` from `remote`.
    pub fn new(remote: &str, method: &str, path: &str, action: &str, result: Outcome) -> Self {
        AuditEntry {
            time: rfc3339_ms(now_ms()),
            token_id: None,
            token_name: None,
            remote: remote.to_string(),
            method: method.to_string(),
            path: scrub(path, 500),
            action: action.to_string(),
            result,
            status: None,
            detail: None,
        }
    }

    /// Sets the token that made the call.
    pub fn token(mut self, id: &str, name: &str) -> Self {
        self.token_id = Some(id.to_string());
        self.token_name = Some(name.to_string());
        self
    }

    /// Sets the HTTP status answered.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the detail (cut to 300 characters, secrets masked).
    pub fn detail(mut self, detail: impl AsRef<str>) -> Self {
        self.detail = Some(scrub(detail.as_ref(), 300));
        self
    }
}

/// Masks anything that looks like a token secret and cuts to `max` chars.
fn scrub(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut rest = text;
    while let Some(at) = rest.find(SECRET_PREFIX) {
        out.push_str(&rest[..at]);
        out.push_str(SECRET_PREFIX);
        out.push('…');
        let after = &rest[at + SECRET_PREFIX.len()..];
        let end = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    if out.chars().count() > max {
        out = out.chars().take(max).collect::<String>() + "…";
    }
    out
}

/// The audit log file. Appends are serialised within a process and atomic
/// across processes.
pub struct AuditLog {
    path: PathBuf,
    lock: Mutex<()>,
}

impl AuditLog {
    /// The log in `data_dir` (`audit.jsonl`); created on the first append.
    pub fn open(data_dir: &Path) -> AuditLog {
        AuditLog {
            path: data_dir.join("audit.jsonl"),
            lock: Mutex::new(()),
        }
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry as a JSON line and syncs it.
    ///
    /// # Errors
    /// The folder or file cannot be created or written.
    pub fn append(&self, entry: &AuditEntry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&self.path)?;
        file.write_all(&line)?;
        file.sync_data()
    }

    /// Appends, logging (not failing) when the log cannot be written: an
    /// operation that already happened is not undone for its audit line.
    pub fn record(&self, entry: &AuditEntry) {
        if let Err(e) = self.append(entry) {
            tracing::error!(error = %e, path = %self.path.display(), action = %entry.action, "cannot write the audit log");
        }
    }

    /// Entries whose time is at or after `since` (RFC 3339, compared as
    /// text, which orders correctly for our fixed format), oldest first.
    /// Lines that do not parse are returned as errors with their number.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn read(&self, since: Option<&str>) -> io::Result<Vec<Result<AuditEntry, String>>> {
        let file = match fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for (n, line) in io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<AuditEntry>(&line) {
                Ok(e) if since.is_none_or(|s| e.time.as_str() >= s) => out.push(Ok(e)),
                Ok(_) => {}
                Err(e) => out.push(Err(format!(
                    "{}:{}: not an audit entry: {e}",
                    self.path.display(),
                    n + 1
                ))),
            }
        }
        Ok(out)
    }
}

/// Who runs the CLI, for `remote` (`cli:<user>`).
pub fn cli_remote() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Unix milliseconds as RFC 3339 UTC (`2024-11-24T12:26:40.000Z`); the bare
/// number past year 9999.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let of_day = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if year > 9999 {
        return ms.to_string();
    }
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        ms % 1000
    )
}

/// Parses `--since`: an RFC 3339 time as written in the log (a prefix such
/// as `2026-11-30` works, since entries compare as text), or a duration back
/// from now (`90m`, `24h`, `7d`).
///
/// # Errors
/// Neither a duration nor a date-like prefix.
pub fn parse_since(text: &str) -> Result<String, String> {
    let text = text.trim();
    if let Ok(ago) = super::tokens::parse_duration(text) {
        return Ok(rfc3339_ms(now_ms().saturating_sub(ago.as_millis() as u64)));
    }
    let date_like = text.len() >= 4
        && text.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"-T:.Z".contains(&b));
    if date_like {
        Ok(text.to_string())
    } else {
        Err(format!(
            "--since {text:?}: give a time (2026-11-30T12:00:00Z, or a prefix like 2026-11-30) or a duration (90m, 24h, 7d)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_lines_and_reads_them_back_since_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path());
        let mut first = AuditEntry::new(
            "127.0.0.1",
            "POST",
            "/admin/tokens",
            "token.create",
            Outcome::Allowed,
        )
        .token("tok_a", "ci")
        .status(201)
        .detail("created tok_b");
        first.time = "2026-01-01T00:00:00.000Z".into();
        log.append(&first).unwrap();
        let second = AuditEntry::new(
            "cli:root",
            "CLI",
            "token revoke tok_b",
            "token.revoke",
            Outcome::Refused,
        );
        log.append(&second).unwrap();
        let all = log.read(None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].as_ref().unwrap(), &first);
        let recent = log.read(Some("2026-06")).unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].as_ref().unwrap().action, "token.revoke");
        let text = fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text
            .lines()
            .next()
            .unwrap()
            .contains(r#""token_name":"ci""#));
    }

    #[test]
    fn secrets_never_reach_the_log() {
        let secret = "tpat_0123456789abcdefghijABCDEFGHIJ0123456789xyzAB1234";
        let e = AuditEntry::new(
            "1.2.3.4",
            "GET",
            &format!("/admin/x?t={secret}"),
            "x",
            Outcome::Refused,
        )
        .detail(format!("bad token {secret} given"));
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains(&secret[5..]), "{line}");
        assert!(line.contains("bad token tpat_… given"));
        assert_eq!(scrub(&"x".repeat(400), 300).chars().count(), 301);
    }

    #[test]
    fn concurrent_appends_do_not_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let log = AuditLog::open(&dir);
                    for j in 0..50 {
                        let e = AuditEntry::new("r", "GET", "/p", "a", Outcome::Allowed)
                            .detail(format!("{i}-{j}-{}", "y".repeat(200)));
                        log.append(&e).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let entries = AuditLog::open(dir.path()).read(None).unwrap();
        assert_eq!(entries.len(), 200);
        assert!(entries.iter().all(Result::is_ok));
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path());
        log.append(&AuditEntry::new("r", "GET", "/", "a", Outcome::Allowed))
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
        f.write_all(b"garbage\n").unwrap();
        let entries = log.read(None).unwrap();
        assert!(entries[0].is_ok());
        assert!(entries[1].as_ref().unwrap_err().contains("audit.jsonl:2:"));
    }

    #[test]
    fn since_takes_times_and_durations() {
        assert_eq!(parse_since("2026-11-30").unwrap(), "2026-11-30");
        let since = parse_since("1h").unwrap();
        assert!(since.ends_with('Z') && since.len() == 24, "{since}");
        assert!(parse_since("yesterday").is_err());
        assert_eq!(rfc3339_ms(1_732_450_000_123), "2024-11-24T12:06:40.123Z");
    }
}
