//! The command line (SPEC §1). Exit codes: 0 ok, 1 invalid config or input,
//! 2 usage.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::admin::audit::rfc3339_ms;
use crate::admin::commands::{audit_command, token_command, TokenCommand};
use crate::app::Plan;
use crate::config::{self, Loaded};
use crate::delivery::deadletter::{DeadLetter, DeadLetters, Filter};
use crate::delivery::inbox;
use crate::logging::{self, json_for_terminal, terminal_safe, LogFormat};
use crate::rules::Secrets;
use crate::server::{self, Bound};

#[derive(Parser)]
#[command(
    name = "tagproxy",
    version,
    about = "Self-hosted, Zaraz-compatible tag manager edge proxy"
)]
struct Cli {
    /// Config file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        env = "TAGPROXY_CONFIG",
        default_value = "tagproxy.toml"
    )]
    config: PathBuf,
    /// Log format; default: text on a terminal, JSON lines otherwise.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy from the config file.
    Serve,
    /// Run the bundled demo shop behind the proxy; needs no file and no network.
    Demo {
        /// Where the proxied shop listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Validate the config file and every tool file.
    Check,
    /// The dead-letter store: deliveries a destination refused or that ran
    /// out of retries.
    Deadletter {
        #[command(subcommand)]
        command: DeadletterCommand,
    },
    /// Account-owned admin tokens: create, list, roll, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Convert a Cloudflare Zaraz config export (the JSON of GET
    /// /zones/{zone_id}/settings/zaraz/config) into tagproxy.toml and
    /// tools/*.toml, listing what could not be carried over.
    ImportZaraz {
        /// The Zaraz config JSON.
        file: PathBuf,
        /// Where to write the files.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Overwrite files that exist.
        #[arg(long)]
        force: bool,
    },
    /// Print the JSON Schemas of tagproxy.toml and of a tool file, for
    /// editors: `{"tagproxy.toml": …, "tool": …}` on stdout, or one of them.
    Schema {
        /// Only the schema of tagproxy.toml.
        #[arg(long = "main", conflicts_with_all = ["tool", "out"])]
        main: bool,
        /// Only the schema of a tool file.
        #[arg(long, conflicts_with = "out")]
        tool: bool,
        /// Write tagproxy.schema.json and tool.schema.json into this folder
        /// instead of printing.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The bot lists (AI crawlers, crawlers, verified crawlers' IP ranges)
    /// stored in data_dir: update them from upstream or files, roll back,
    /// show what is in force.
    Bots {
        #[command(subcommand)]
        command: crate::bots::update::BotsCommand,
    },
    /// Print the audit log of admin calls and token operations.
    Audit {
        /// Only entries since a time (2026-11-30T12:00:00Z, or a prefix such
        /// as 2026-11-30) or a duration back from now (90m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DeadletterCommand {
    /// List dead letters, oldest first.
    List {
        /// Only this tool's dead letters.
        #[arg(long)]
        tool: Option<String>,
        /// Print the full records as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters again: each is built again from its stored event
    /// with the current tool config and secrets (so a fixed token or URL
    /// takes effect), then queued in the spool's replay inbox, which the
    /// running server (or the next start) delivers. Needs the secrets in the
    /// environment, as `serve` does.
    Replay {
        /// Only this tool's dead letters.
        #[arg(long)]
        tool: Option<String>,
        /// Send the stored requests byte for byte instead. Letters whose
        /// credentials were redacted are refused (they would be sent with
        /// `[REDACTED]` in place of the token).
        #[arg(long)]
        as_stored: bool,
        /// Dead-letter ids or event ids; none = all (that match --tool).
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Delete dead letters; needs IDs, --tool or --all.
    #[command(group(
        clap::ArgGroup::new("which")
            .required(true)
            .multiple(true)
            .args(["tool", "all", "ids"])
    ))]
    Purge {
        /// Only this tool's dead letters.
        #[arg(long)]
        tool: Option<String>,
        /// Every dead letter.
        #[arg(long, conflicts_with_all = ["tool", "ids"])]
        all: bool,
        /// Dead-letter ids or event ids.
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = match parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    logging::init(cli.log_format);
    match cli.command {
        Command::Check => check(&cli.config),
        Command::Serve => match load(&cli.config) {
            Some(loaded) => match load_plan(&loaded, Secrets::Required) {
                Some(plan) => serve(loaded, plan),
                None => ExitCode::from(1),
            },
            None => ExitCode::from(1),
        },
        Command::Demo { listen } => demo(listen),
        Command::Deadletter { command } => deadletter_command(&cli.config, command),
        Command::Token { command } => match load(&cli.config) {
            Some(loaded) => token_command(&loaded.data_dir(), command),
            None => ExitCode::from(1),
        },
        Command::ImportZaraz { file, out, force } => {
            crate::import_zaraz::command(&file, &out, force)
        }
        Command::Schema { main, tool, out } => crate::schema::command(main, tool, out.as_deref()),
        Command::Bots { command } => match load(&cli.config) {
            Some(loaded) => crate::bots::update::command(&loaded.data_dir(), command),
            None => ExitCode::from(1),
        },
        Command::Audit { since, json } => match load(&cli.config) {
            Some(loaded) => audit_command(&loaded.data_dir(), since.as_deref(), json),
            None => ExitCode::from(1),
        },
    }
}

/// Parses the command line. `demo` runs its own built-in config, so a
/// `-c`/`--config` given with it is a usage error rather than silently
/// ignored (`TAGPROXY_CONFIG` in the environment is ambient and ignored).
fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory as _, FromArgMatches as _};
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let given = |m: &clap::ArgMatches| {
        m.value_source("config") == Some(clap::parser::ValueSource::CommandLine)
    };
    if let Some(("demo", sub)) = matches.subcommand() {
        if given(&matches) || given(sub) {
            return Err(command.error(
                clap::error::ErrorKind::ArgumentConflict,
                "`demo` takes no config: it runs a built-in shop with a console tool and needs no file; use `tagproxy serve -c FILE` to run your own config",
            ));
        }
    }
    Ok(cli)
}

fn load(path: &Path) -> Option<Loaded> {
    match config::load(path) {
        Ok(loaded) => Some(loaded),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// Loads the config and every tool file, or prints why not.
fn load_plan(loaded: &Loaded, secrets: Secrets) -> Option<Plan> {
    match Plan::load(loaded, secrets) {
        Ok(plan) => Some(plan),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

fn check(path: &Path) -> ExitCode {
    let Some(loaded) = load(path) else {
        return ExitCode::from(1);
    };
    // A config is checked where its secrets may not be (CI, an editor).
    let Some(plan) = load_plan(&loaded, Secrets::Optional) else {
        return ExitCode::from(1);
    };
    for w in loaded.warnings.iter().chain(&plan.warnings) {
        eprintln!("warning: {w}");
    }
    if let Some(why) = unwritable(&loaded.data_dir()) {
        eprintln!("warning: {why}");
    }
    let triggers = plan.triggers.list.len();
    println!("ok: {} tools, {triggers} triggers", plan.tools.len());
    ExitCode::SUCCESS
}

/// Why `serve` could not write under `data_dir` (its dead letters, spool and
/// tokens live there), if so. A warning, not a problem: `check` may run on
/// another machine than `serve` (CI). Writes and removes one probe file in
/// the first folder that exists on the way; creates nothing else.
fn unwritable(data_dir: &Path) -> Option<String> {
    let shown = data_dir.display();
    let mut dir = data_dir;
    loop {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Some(format!(
                    "data_dir {shown}: {} is not a folder; serve cannot create its files there",
                    dir.display()
                ))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                match dir.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => dir = parent,
                    _ => return None,
                }
            }
            Err(e) => return Some(format!("data_dir {shown}: {}: {e}", dir.display())),
        }
    }
    let probe = dir.join(format!(".tagproxy-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) => Some(format!(
            "data_dir {shown}: cannot write in {}: {e}; serve will fail to start",
            dir.display()
        )),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work is short file I/O (spool reads, dead letters): a
        // few threads suffice, and each one costs memory.
        .max_blocking_threads(32)
        .build()
        .expect("tokio runtime")
}

fn serve(loaded: Loaded, plan: Plan) -> ExitCode {
    let rt = runtime();
    rt.block_on(async {
        let server = &loaded.config.server;
        let bound = match Bound::bind(server.listen.0, server.admin_listen.0).await {
            Ok(b) => match &server.tls {
                Some(tls) => b.with_tls(tls.listen.0).await,
                None => Ok(b),
            },
            Err(e) => Err(e),
        };
        let bound = match bound {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: {e}", loaded.path.display());
                return ExitCode::from(1);
            }
        };
        match server::run(&loaded, plan, bound, true).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        }
    })
}

fn demo(listen: SocketAddr) -> ExitCode {
    let rt = runtime();
    rt.block_on(async {
        let origin = match crate::demo::start_origin().await {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("cannot start the demo origin: {e}");
                return ExitCode::from(1);
            }
        };
        // A fresh key per run: the debugger link below is the only way in.
        let debug_key = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let text = format!(
            "[server]\nlisten = \"{listen}\"\nupstream = \"http://{origin}\"\nadmin_listen = \"127.0.0.1:0\"\n[delivery]\nbackend = \"memory\"\n[settings]\ndebug_key = \"{debug_key}\"\n"
        );
        let loaded = config::parse(Path::new("<demo>"), &text).expect("demo config is valid");
        let console = "type = \"console\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n";
        let tool = crate::tools::from_text("console", Path::new("<demo>/tools/console.toml"), console, &Default::default(), &Default::default())
            .expect("demo tool is valid")
            .expect("enabled");
        let plan = Plan { tools: vec![tool], variables: Default::default(), triggers: Default::default(), warnings: Vec::new(), sources: Vec::new() };
        let bound = match Bound::bind(listen, loaded.config.server.admin_listen.0).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{e} (try --listen 127.0.0.1:8081)");
                return ExitCode::from(1);
            }
        };
        let url = format!("http://{}", bound.public.local_addr().expect("bound"));
        println!("tagproxy demo shop is running.");
        println!("  shop (proxied, script injected):  {url}/");
        println!("  product page:                     {url}/product/mug");
        println!("  cart / checkout:                  {url}/cart  {url}/checkout");
        println!("  SPA route (history pageviews):    {url}/app");
        println!("  client script:                    {url}/_tagproxy/s.js");
        println!("  live debugger (this browser):     {url}/_tagproxy/debug?tagproxy_debug={debug_key}");
        println!("  admin health:                     http://{}/healthz", bound.admin.local_addr().expect("bound"));
        println!("Every event the shop sends is printed below by the `console` tool.");
        println!("Press Ctrl-C to stop.");
        match server::run(&loaded, plan, bound, false).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        }
    })
}

/// `tagproxy deadletter list|replay|purge` (SPEC §1, §11).
fn deadletter_command(path: &Path, command: DeadletterCommand) -> ExitCode {
    // Loaded as `check` loads it: an invalid config is refused, secrets are
    // not needed.
    let Some(loaded) = load(path) else {
        return ExitCode::from(1);
    };
    if load_plan(&loaded, Secrets::Optional).is_none() {
        return ExitCode::from(1);
    }
    let store = DeadLetters::new(&loaded.data_dir());
    let failed = |e: std::io::Error| {
        eprintln!("{}: {e}", store.path().display());
        ExitCode::from(1)
    };
    match command {
        DeadletterCommand::List { tool, json } => {
            let listing = match store.list(&Filter {
                tool,
                ids: Vec::new(),
            }) {
                Ok(listing) => listing,
                Err(e) => return failed(e),
            };
            let mut out = std::io::stdout().lock();
            for letter in &listing.letters {
                let line = if json {
                    json_for_terminal(&letter_json(letter).to_string())
                } else {
                    letter_line(letter)
                };
                if writeln!(out, "{line}").is_err() {
                    return ExitCode::from(1);
                }
            }
            let unreadable = match listing.unreadable {
                0 => String::new(),
                1 => "1 unreadable line".to_string(),
                k => format!("{k} unreadable lines"),
            };
            if !json {
                let n = dead_letters(listing.letters.len());
                let sep = if unreadable.is_empty() { "" } else { ", " };
                let _ = writeln!(out, "{n}{sep}{unreadable}");
            } else if listing.unreadable > 0 {
                let path = store.path().display();
                eprintln!("warning: {path}: {unreadable} (kept, not listed)");
            }
            ExitCode::SUCCESS
        }
        DeadletterCommand::Replay {
            tool,
            ids,
            as_stored,
        } => {
            let listing = match store.list(&Filter { tool, ids }) {
                Ok(listing) => listing,
                Err(e) => return failed(e),
            };
            // Building requests again needs the secrets, as `serve` does;
            // letters without a stored event (older versions) are sent as
            // stored and need none.
            let rebuild = !as_stored && listing.letters.iter().any(|l| l.delivery.source.is_some());
            let plan = if rebuild {
                match load_plan(&loaded, Secrets::Required) {
                    Some(plan) => Some(plan),
                    None => {
                        eprintln!("replay builds requests again with the current secrets: set them, or use --as-stored");
                        return ExitCode::from(1);
                    }
                }
            } else {
                None
            };
            let mut built = std::collections::HashMap::new();
            let mut refused = 0usize;
            for letter in &listing.letters {
                match replay_delivery(letter, plan.as_ref(), as_stored) {
                    Ok(d) => {
                        built.insert(letter.id.clone(), d);
                    }
                    Err(why) => {
                        refused += 1;
                        eprintln!(
                            "{}: not replayed (kept): {}",
                            terminal_safe(&letter.id),
                            terminal_safe(&why)
                        );
                    }
                }
            }
            let spool = loaded.spool_dir();
            let mut inbox_error = None;
            let which = Filter {
                tool: None,
                ids: built.keys().cloned().collect(),
            };
            // The deliveries reach the inbox before they leave the store: a
            // crash in between sends them twice, never zero times.
            let result = if built.is_empty() {
                Ok((Vec::new(), None))
            } else {
                store.take_with(&which, |letters| {
                    let deliveries: Vec<_> = letters
                        .iter()
                        .filter_map(|l| built.get(&l.id).cloned())
                        .collect();
                    inbox::write(&spool, &deliveries).inspect_err(|e| {
                        inbox_error = Some(format!("{}: {e}", inbox::dir(&spool).display()));
                    })
                })
            };
            let code = if refused > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
            match result {
                Ok((taken, Some(file))) => {
                    println!(
                        "replayed {} (queued in {})",
                        dead_letters(taken.len()),
                        file.display()
                    );
                    code
                }
                Ok((_, None)) => {
                    println!("nothing to replay");
                    code
                }
                Err(e) => match inbox_error {
                    Some(message) => {
                        eprintln!("{message}");
                        ExitCode::from(1)
                    }
                    None => failed(e),
                },
            }
        }
        DeadletterCommand::Purge { tool, all: _, ids } => {
            // clap guarantees IDs, --tool or --all; --all is the empty filter.
            match store.take(&Filter { tool, ids }) {
                Ok(taken) => {
                    println!("purged {}", dead_letters(taken.len()));
                    ExitCode::SUCCESS
                }
                Err(e) => failed(e),
            }
        }
    }
}

/// What replaying `letter` sends: built again from its stored event with
/// `plan` (the current config), or with `plan = None` (`--as-stored`) the
/// stored request, which a redacted letter cannot give. A letter stored by
/// an older version without its event is sent as stored when it can be.
fn replay_delivery(
    letter: &DeadLetter,
    plan: Option<&Plan>,
    as_stored: bool,
) -> Result<crate::tools::Delivery, String> {
    match (plan, &letter.delivery.source) {
        (Some(plan), Some(source)) => {
            crate::rules::rebuild(source, &letter.tool, &plan.tools, &plan.variables)
        }
        _ if letter.redacted => Err(if !as_stored {
            "its credentials were redacted and it has no stored event to build it again from"
                .to_string()
        } else {
            "its credentials were redacted; replay it without --as-stored to build it with the current config".to_string()
        }),
        _ => Ok(letter.delivery.clone()),
    }
}

/// A dead letter as `deadletter list --json` prints it: the request body as
/// text (`"body"`), or as base64 with `"body_encoding": "base64"` when it is
/// not UTF-8, rather than an array of byte values.
fn letter_json(letter: &DeadLetter) -> serde_json::Value {
    use base64::Engine as _;
    let mut v = serde_json::to_value(letter).expect("a dead letter serializes");
    if let crate::tools::Payload::Http(req) = &letter.delivery.payload {
        if let Some(http) = v.pointer_mut("/delivery/payload/Http") {
            if let Some(body) = &req.body {
                match std::str::from_utf8(body) {
                    Ok(text) => http["body"] = text.into(),
                    Err(_) => {
                        http["body"] = base64::engine::general_purpose::STANDARD
                            .encode(body)
                            .into();
                        http["body_encoding"] = "base64".into();
                    }
                }
            }
        }
    }
    v
}

fn dead_letters(n: usize) -> String {
    if n == 1 {
        "1 dead letter".to_string()
    } else {
        format!("{n} dead letters")
    }
}

/// `<id>  <tool>  <event_id>  <status>  <attempts>  <failed at>  <reason>`.
/// Dead letters hold what visitors sent: every column is cleaned of
/// characters that could forge terminal output.
fn letter_line(l: &DeadLetter) -> String {
    let status = l.status.map_or_else(|| "-".to_string(), |s| s.to_string());
    let mut reason = terminal_safe(&l.reason);
    if reason.chars().count() > 100 {
        reason = reason.chars().take(99).collect::<String>() + "…";
    }
    format!(
        "{}  {}  {}  {status}  {}  {}  {reason}",
        terminal_safe(&l.id),
        terminal_safe(&l.tool),
        terminal_safe(&l.event_id),
        l.attempts,
        rfc3339_ms(l.failed_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_unix_ms() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_732_450_000_123), "2024-11-24T12:06:40.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(253_402_300_800_000), "253402300800000");
    }

    #[test]
    fn letter_line_columns_and_reason_cut() {
        let delivery = crate::tools::Delivery {
            tool: "ga4".into(),
            event_id: "evt-1".into(),
            payload: crate::tools::Payload::Stdout("x".into()),
            source: None,
            secrets: Vec::new(),
        };
        let mut l = DeadLetter::new(delivery, "HTTP 400:\n{}", Some(400), b"", 1, 0);
        l.id = "id1".into();
        l.failed_ms = 0;
        assert_eq!(
            letter_line(&l),
            "id1  ga4  evt-1  400  1  1970-01-01T00:00:00.000Z  HTTP 400: {}"
        );
        l.status = None;
        l.reason = "é".repeat(150);
        let line = letter_line(&l);
        assert!(line.contains("  -  1  "), "{line}");
        assert!(line.ends_with(&format!("{}…", "é".repeat(99))), "{line}");
    }

    #[test]
    fn listings_cannot_forge_terminal_output() {
        use crate::logging::acts_on_terminal;
        let delivery = crate::tools::Delivery {
            tool: "hook".into(),
            event_id: "evt-1\x1b[2J".into(),
            payload: crate::tools::Payload::Stdout("x".into()),
            source: None,
            secrets: Vec::new(),
        };
        let hostile = "O1\r\nX-Evil: 1\u{1b}[31m\u{9b}2J\u{202e}txt.exe\u{2028}";
        let mut l = DeadLetter::new(delivery, hostile, None, b"", 0, 0);
        l.id = "id1".into();
        let line = letter_line(&l);
        assert!(!line.chars().any(acts_on_terminal), "{line:?}");
        assert!(line.contains("O1  X-Evil: 1 [31m 2J txt.exe "), "{line:?}");
        let json = json_for_terminal(&serde_json::to_string(&l).unwrap());
        assert!(!json.chars().any(acts_on_terminal), "{json:?}");
        let back: DeadLetter = serde_json::from_str(&json).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn demo_refuses_a_config_file() {
        for args in [
            &["tagproxy", "demo", "-c", "x.toml"][..],
            &["tagproxy", "-c", "x.toml", "demo"],
            &[
                "tagproxy",
                "demo",
                "--config=x.toml",
                "--listen",
                "127.0.0.1:0",
            ],
        ] {
            let e = parse_args(args).err().expect("refused");
            assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
            assert!(e.to_string().contains("`demo` takes no config"), "{e}");
        }
        assert!(parse_args(["tagproxy", "demo"]).is_ok());
        assert!(parse_args(["tagproxy", "check", "-c", "x.toml"]).is_ok());
    }

    #[test]
    fn purge_needs_a_filter_or_all() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let e = parse(&["tagproxy", "deadletter", "purge"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(parse(&["tagproxy", "deadletter", "purge", "--all"]).is_ok());
        assert!(parse(&["tagproxy", "deadletter", "purge", "--tool", "ga4"]).is_ok());
        assert!(parse(&["tagproxy", "deadletter", "purge", "a", "b"]).is_ok());
        assert!(parse(&["tagproxy", "deadletter", "purge", "--all", "a"]).is_err());
    }
}
