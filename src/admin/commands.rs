//! `tagproxy token …` and `tagproxy audit` (SPEC §1, §10): the command-line
//! side of the token store and the audit log. Every token operation, done or
//! refused, is written to the audit log as `cli:<user>`.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::audit::{cli_remote, parse_since, rfc3339_ms, AuditEntry, AuditLog, Outcome};
use super::tokens::{parse_duration, parse_scopes, Token, TokenStore};
use crate::logging::{json_for_terminal, terminal_safe};

/// `tagproxy token …`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue a token; prints its secret alone on the first line of stdout,
    /// once (details go to stderr).
    Create {
        /// A name saying what uses it (unique), e.g. "ci deploy".
        #[arg(long)]
        name: String,
        /// Comma-separated: config:read, config:write, events:read,
        /// events:write, tokens:write, metrics:read.
        #[arg(long)]
        scopes: String,
        /// Lifetime such as 90d, 12h, 30m; default: no expiry.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Give a token a new secret (printed alone on the first line); the old
    /// one stops working at once.
    Roll {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Delete a token; its secret stops working at once.
    Revoke {
        #[arg(value_name = "ID")]
        id: String,
    },
}

impl TokenCommand {
    fn action_and_line(&self) -> (&'static str, String) {
        match self {
            TokenCommand::Create {
                name,
                scopes,
                expires_in,
            } => (
                "token.create",
                format!(
                    "token create --name {name:?} --scopes {scopes}{}",
                    expires_in
                        .as_ref()
                        .map(|e| format!(" --expires-in {e}"))
                        .unwrap_or_default()
                ),
            ),
            TokenCommand::List { .. } => ("token.list", "token list".into()),
            TokenCommand::Roll { id } => ("token.roll", format!("token roll {id}")),
            TokenCommand::Revoke { id } => ("token.revoke", format!("token revoke {id}")),
        }
    }
}

/// Runs a `token` subcommand against the store in `data_dir`.
pub fn token_command(data_dir: &Path, command: TokenCommand) -> ExitCode {
    let store = TokenStore::open(data_dir);
    let audit = AuditLog::open(data_dir);
    let (action, line) = command.action_and_line();
    let entry = |result, detail: String| {
        AuditEntry::new(&cli_remote(), "CLI", &line, action, result).detail(detail)
    };
    let result: Result<String, String> = match command {
        TokenCommand::Create {
            name,
            scopes,
            expires_in,
        } => (|| {
            let scopes = parse_scopes(&scopes)?;
            let expires = expires_in.as_deref().map(parse_duration).transpose()?;
            let (token, secret) = store
                .create(&name, scopes, expires)
                .map_err(|e| e.to_string())?;
            println!("{}", secret.expose());
            eprintln!("{}", describe("created", &token));
            Ok(token.id)
        })(),
        TokenCommand::Roll { id } => store
            .roll(&id)
            .map(|(token, secret)| {
                println!("{}", secret.expose());
                eprintln!("{}", describe("rolled", &token));
                token.id
            })
            .map_err(|e| e.to_string()),
        TokenCommand::Revoke { id } => store
            .revoke(&id)
            .map(|token| {
                eprintln!("{}", describe("revoked", &token));
                token.id
            })
            .map_err(|e| e.to_string()),
        TokenCommand::List { json } => store.list().map_err(|e| e.to_string()).and_then(|tokens| {
            print_tokens(&tokens, json).map_err(|e| e.to_string())?;
            Ok(format!("{} token(s)", tokens.len()))
        }),
    };
    match result {
        Ok(detail) => {
            audit.record(&entry(Outcome::Allowed, detail));
            ExitCode::SUCCESS
        }
        Err(message) => {
            audit.record(&entry(Outcome::Failed, message.clone()));
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

fn describe(verb: &str, t: &Token) -> String {
    let scopes: Vec<_> = t.scopes.iter().map(|s| s.as_str()).collect();
    format!(
        "{verb} token {} {:?} with scopes {}{}",
        t.id,
        terminal_safe(&t.name),
        scopes.join(","),
        t.expires_ms
            .map(|e| format!(", expires {}", rfc3339_ms(e)))
            .unwrap_or_default()
    )
}

fn print_tokens(tokens: &[Token], json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for t in tokens {
            writeln!(out, "{}", json_for_terminal(&t.public_json().to_string()))?;
        }
        return Ok(());
    }
    let time = |ms: Option<u64>| ms.map_or_else(|| "-".to_string(), rfc3339_ms);
    writeln!(
        out,
        "{:<16}  {:<24}  {:<40}  {:<24}  {:<24}  EXPIRES",
        "ID", "NAME", "SCOPES", "CREATED", "LAST USED"
    )?;
    for t in tokens {
        let scopes: Vec<_> = t.scopes.iter().map(|s| s.as_str()).collect();
        writeln!(
            out,
            "{:<16}  {:<24}  {:<40}  {:<24}  {:<24}  {}",
            t.id,
            terminal_safe(&t.name),
            scopes.join(","),
            rfc3339_ms(t.created_ms),
            time(t.last_used_ms),
            time(t.expires_ms)
        )?;
    }
    Ok(())
}

/// `tagproxy audit [--since X] [--json]`: prints the audit log, oldest first.
pub fn audit_command(data_dir: &Path, since: Option<&str>, json: bool) -> ExitCode {
    let since = match since.map(parse_since).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let log = AuditLog::open(data_dir);
    let entries = match log.read(since.as_deref()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{}: {e}", log.path().display());
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout().lock();
    for entry in entries {
        let line = match entry {
            Ok(e) if json => {
                json_for_terminal(&serde_json::to_string(&e).expect("an entry serializes"))
            }
            Ok(e) => entry_line(&e),
            Err(problem) => {
                eprintln!("warning: {problem}");
                continue;
            }
        };
        if writeln!(out, "{line}").is_err() {
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

fn entry_line(e: &AuditEntry) -> String {
    let result = match e.result {
        Outcome::Allowed => "allowed",
        Outcome::Refused => "REFUSED",
        Outcome::Failed => "FAILED",
    };
    let who = match (&e.token_name, &e.token_id) {
        (Some(name), Some(id)) => format!("{name:?} ({id})"),
        _ => "-".into(),
    };
    format!(
        "{}  {:<8}  {:<16}  {}  {}  {} {}{}{}",
        e.time,
        result,
        terminal_safe(&e.action),
        terminal_safe(&who),
        terminal_safe(&e.remote),
        terminal_safe(&e.method),
        terminal_safe(&e.path),
        e.status.map(|s| format!("  {s}")).unwrap_or_default(),
        e.detail
            .as_ref()
            .map(|d| format!("  {}", terminal_safe(d)))
            .unwrap_or_default()
    )
}
