//! `tagproxy bots update|rollback|status` (issue 16): replace the bot lists
//! stored in `data_dir/bots/lists.json` from files or URLs.
//!
//! `--from` reads a [`Bundle`] (`"format": "tagproxy-bot-lists/1"`), or one
//! of the upstream files the compiled-in lists come from: ai.robots.txt's
//! `robots.json` (its keys are the AI tokens) or crawler-user-agents'
//! `crawler-user-agents.json` (each entry's `pattern`). `--ranges NAME=SRC`
//! reads a crawler operator's published IP ranges (Google's format,
//! `{"creationTime": …, "prefixes": [{"ipv4Prefix": …} | {"ipv6Prefix": …}]}`,
//! which Bing, OpenAI, Perplexity and Apple use too; or one prefix per
//! line). Without either, every [`DEFAULT_SOURCES`] and [`DEFAULT_RANGES`]
//! URL is fetched.
//!
//! Everything is read and validated before anything is written: one bad
//! source (unreachable, not parseable, an empty list, a pattern that does
//! not compile, a list under half its current size without `--force`)
//! changes nothing and exits 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

use super::lists::{
    self, entries, parse_prefix, read_stored, rfc3339, unix_now, write_atomic, Bundle, Lists, Part,
    Version, AI_ROBOTS, COMPILED_IN, CRAWLER_USER_AGENTS, FILE, FORMAT, MAX_FILE_BYTES, PREVIOUS,
};

/// ai.robots.txt's list: an object whose keys are the AI crawler tokens.
pub const ROBOTS_JSON_URL: &str =
    "https://raw.githubusercontent.com/ai-robots-txt/ai.robots.txt/main/robots.json";
/// crawler-user-agents' list: an array of `{"pattern": …}` objects.
pub const CRAWLER_USER_AGENTS_URL: &str =
    "https://raw.githubusercontent.com/monperrus/crawler-user-agents/master/crawler-user-agents.json";
/// What `bots update` without `--from`/`--ranges` reads for the two lists.
pub const DEFAULT_SOURCES: &[&str] = &[ROBOTS_JSON_URL, CRAWLER_USER_AGENTS_URL];
/// Crawler name → its operator's published IP ranges, each documented by
/// the operator: Google (developers.google.com/search/docs/crawling-indexing/verifying-googlebot),
/// Bing (bing.com/webmasters/help/verifying-that-bingbot-is-bingbot-3905dc26),
/// OpenAI (platform.openai.com/docs/bots), Perplexity
/// (docs.perplexity.ai/guides/bots), Apple (support.apple.com/en-us/119829).
pub const DEFAULT_RANGES: &[(&str, &str)] = &[
    (
        "Googlebot",
        "https://developers.google.com/static/search/apis/ipranges/googlebot.json",
    ),
    ("bingbot", "https://www.bing.com/toolbox/bingbot.json"),
    ("GPTBot", "https://openai.com/gptbot.json"),
    ("OAI-SearchBot", "https://openai.com/searchbot.json"),
    ("ChatGPT-User", "https://openai.com/chatgpt-user.json"),
    (
        "PerplexityBot",
        "https://www.perplexity.ai/perplexitybot.json",
    ),
    (
        "Perplexity-User",
        "https://www.perplexity.ai/perplexity-user.json",
    ),
    (
        "Applebot",
        "https://search.developer.apple.com/applebot.json",
    ),
];
/// How long one download may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// `tagproxy bots …`.
#[derive(Subcommand)]
pub enum BotsCommand {
    /// Replace the AI-crawler, crawler and verified-crawler lists stored in
    /// data_dir/bots/lists.json (a running server picks them up within 2 s).
    /// Without --from or --ranges, fetches ai.robots.txt's robots.json,
    /// crawler-user-agents.json and the published IP ranges of Googlebot,
    /// bingbot, GPTBot, OAI-SearchBot, ChatGPT-User, PerplexityBot,
    /// Perplexity-User and Applebot. Nothing is written unless every source
    /// reads and validates.
    Update {
        /// A file or http(s) URL: a tagproxy-bot-lists/1 bundle,
        /// ai.robots.txt's robots.json or crawler-user-agents.json; the
        /// lists it holds replace the stored ones, the others stay.
        #[arg(long, value_name = "FILE|URL")]
        from: Vec<String>,
        /// A crawler's published IP ranges (Google's JSON format, or one
        /// prefix per line), replacing that name's ranges.
        #[arg(long, value_name = "NAME=FILE|URL")]
        ranges: Vec<String>,
        /// Accept a list under half the size of the one it replaces.
        #[arg(long)]
        force: bool,
    },
    /// Put back the lists stored before the last update (the current ones
    /// become the previous ones).
    Rollback,
    /// Show the lists the server would use: version, source, age, entries.
    Status,
}

/// Runs a `bots` subcommand against `data_dir`.
pub fn command(data_dir: &Path, command: BotsCommand) -> ExitCode {
    let dir = lists::dir(data_dir);
    let result = match command {
        BotsCommand::Update {
            from,
            ranges,
            force,
        } => update(&dir, &from, &ranges, force),
        BotsCommand::Rollback => rollback(&dir),
        BotsCommand::Status => status(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", crate::logging::terminal_safe(&e));
            ExitCode::from(1)
        }
    }
}

/// One source, read.
struct Fetched {
    bytes: Vec<u8>,
    /// The path or URL.
    source: String,
    /// `Last-Modified`, or the file's modification time.
    stamp: Option<String>,
}

fn is_url(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://")
}

async fn fetch(http: &reqwest::Client, src: &str) -> Result<Fetched, String> {
    if !is_url(src) {
        if src.contains("://") {
            return Err(format!("{src}: only http:// and https:// URLs or files"));
        }
        let path = Path::new(src);
        let meta = std::fs::metadata(path).map_err(|e| format!("{src}: {e}"))?;
        if meta.len() > MAX_FILE_BYTES as u64 {
            return Err(format!("{src}: larger than {MAX_FILE_BYTES} bytes"));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{src}: {e}"))?;
        let stamp = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| rfc3339(d.as_secs()));
        let source = std::fs::canonicalize(path)
            .unwrap_or_else(|_| PathBuf::from(src))
            .display()
            .to_string();
        return Ok(Fetched {
            bytes,
            source,
            stamp,
        });
    }
    let mut resp = http
        .get(src)
        .send()
        .await
        .map_err(|e| format!("{src}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{src}: HTTP {}", resp.status()));
    }
    let stamp = resp
        .headers()
        .get(http::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{src}: {e}"))? {
        if bytes.len() + chunk.len() > MAX_FILE_BYTES {
            return Err(format!("{src}: larger than {MAX_FILE_BYTES} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        bytes,
        source: src.to_string(),
        stamp,
    })
}

/// What one `--from` source holds.
#[derive(Debug, PartialEq)]
pub enum Source {
    /// A tagproxy bundle.
    Bundle(Bundle),
    /// ai.robots.txt's robots.json: the AI tokens (its keys, in key order).
    RobotsJson(Vec<String>),
    /// crawler-user-agents.json: the patterns.
    CrawlerUserAgents(Vec<String>),
}

/// Recognises and reads a `--from` source.
///
/// # Errors
/// Not JSON, or none of the three formats, or a bundle that fails
/// validation.
pub fn parse_source(bytes: &[u8]) -> Result<Source, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    match &value {
        Value::Object(o) if o.contains_key("format") => Bundle::parse(bytes).map(Source::Bundle),
        Value::Object(o) if o.contains_key("prefixes") => Err(
            "this is an IP range file: give it as --ranges NAME=FILE|URL".into(),
        ),
        Value::Object(o) if !o.is_empty() && o.values().all(Value::is_object) => Ok(
            Source::RobotsJson(
                o.keys()
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect(),
            ),
        ),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, e)| {
                e.get("pattern")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| format!("[{i}]: no \"pattern\" string (crawler-user-agents.json entries have one)"))
            })
            .collect::<Result<_, _>>()
            .map(Source::CrawlerUserAgents),
        _ => Err(format!(
            "not a bot list: expected a {FORMAT} bundle, ai.robots.txt's robots.json or crawler-user-agents.json"
        )),
    }
}

/// Reads an IP range file: `(prefixes, creationTime)`. Google's JSON
/// format (used by Bing, OpenAI, Perplexity and Apple too), or text with
/// one prefix per line (`#` comments).
///
/// # Errors
/// Neither format, a prefix that does not parse, or no prefixes.
pub fn parse_ranges(bytes: &[u8]) -> Result<(Vec<String>, Option<String>), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let (prefixes, created) = if text.trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let list = v
            .get("prefixes")
            .and_then(Value::as_array)
            .ok_or("no \"prefixes\" array (expected {\"prefixes\": [{\"ipv4Prefix\": …}]})")?;
        let prefixes = list
            .iter()
            .map(|p| {
                p.get("ipv4Prefix")
                    .or_else(|| p.get("ipv6Prefix"))
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| format!("prefix {p} has no ipv4Prefix or ipv6Prefix"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let created = v
            .get("creationTime")
            .and_then(Value::as_str)
            .map(String::from);
        (prefixes, created)
    } else {
        let prefixes = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        (prefixes, None)
    };
    if prefixes.is_empty() {
        return Err("no IP prefixes".into());
    }
    for p in &prefixes {
        parse_prefix(p)?;
    }
    Ok((prefixes, created))
}

/// `NAME=SRC` of `--ranges`.
fn split_ranges(arg: &str) -> Result<(&str, &str), String> {
    match arg.split_once('=') {
        Some((name, src)) if !name.trim().is_empty() && !src.trim().is_empty() => {
            Ok((name.trim(), src.trim()))
        }
        _ => Err(format!(
            "--ranges {arg}: expected NAME=FILE|URL, e.g. Googlebot=googlebot.json"
        )),
    }
}

fn version(bundle: &Bundle, part: Part, source: &str, source_version: Option<String>) -> Version {
    let now = unix_now();
    Version {
        version: bundle.content_version(part).unwrap_or_default(),
        source: source.to_string(),
        source_version,
        fetched_at: rfc3339(now),
        fetched_unix: now,
    }
}

/// Entries of `part` in `stored`, or of the compiled-in list.
fn in_force_len(stored: Option<&Bundle>, part: Part) -> usize {
    stored
        .and_then(|b| b.len(part))
        .unwrap_or_else(|| match part {
            Part::AiCrawlers => entries(AI_ROBOTS).count(),
            Part::Crawlers => entries(CRAWLER_USER_AGENTS).count(),
            Part::VerifiedCrawlers => 0,
        })
}

/// The new stored bundle from `current` and the sources: each list a source
/// holds replaces the current one; `--ranges` replace their names' ranges.
///
/// # Errors
/// A source that fails, two sources for one list, a list that does not
/// build, or (without `force`) shrinks below half.
pub fn merge(
    current: Option<&Bundle>,
    from: Vec<(Provenance, Source)>,
    ranges: Vec<(String, Provenance, Vec<String>, Option<String>)>,
    force: bool,
) -> Result<(Bundle, Vec<Part>), String> {
    let mut new = current.cloned().unwrap_or_else(|| Bundle {
        format: FORMAT.into(),
        ..Bundle::default()
    });
    new.version = None;
    let mut updated: BTreeMap<Part, String> = BTreeMap::new();
    let mut claim = |part: Part, source: &str| -> Result<(), String> {
        if let Some(first) = updated.insert(part, source.to_string()) {
            return Err(format!(
                "{} is given twice: by {first} and by {source}",
                part.key()
            ));
        }
        Ok(())
    };
    for (f, source) in from {
        match source {
            Source::Bundle(b) => {
                for part in Part::ALL.into_iter().filter(|p| b.has(*p)) {
                    claim(part, &f.source)?;
                    let stamp = b.version.clone().or_else(|| f.stamp.clone());
                    match part {
                        Part::AiCrawlers => new.ai_crawlers = b.ai_crawlers.clone(),
                        Part::Crawlers => new.crawlers = b.crawlers.clone(),
                        Part::VerifiedCrawlers => {
                            new.verified_crawlers = b.verified_crawlers.clone()
                        }
                    }
                    let v = version(&new, part, &f.source, stamp);
                    new.versions.insert(part.key().into(), v);
                }
            }
            Source::RobotsJson(tokens) => {
                claim(Part::AiCrawlers, &f.source)?;
                new.ai_crawlers = Some(tokens);
                let v = version(&new, Part::AiCrawlers, &f.source, f.stamp);
                new.versions.insert(Part::AiCrawlers.key().into(), v);
            }
            Source::CrawlerUserAgents(patterns) => {
                claim(Part::Crawlers, &f.source)?;
                new.crawlers = Some(patterns);
                let v = version(&new, Part::Crawlers, &f.source, f.stamp);
                new.versions.insert(Part::Crawlers.key().into(), v);
            }
        }
    }
    if !ranges.is_empty() {
        if updated.contains_key(&Part::VerifiedCrawlers) {
            return Err("verified_crawlers is given twice: by a bundle and by --ranges".into());
        }
        let map = new.verified_crawlers.get_or_insert_with(BTreeMap::new);
        let mut sources = Vec::new();
        let mut stamps = Vec::new();
        for (name, f, prefixes, created) in ranges {
            if let Some(old) = map.keys().find(|k| k.eq_ignore_ascii_case(&name)).cloned() {
                map.remove(&old);
            }
            map.insert(name.clone(), prefixes);
            sources.push(format!("{name}={}", f.source));
            if let Some(s) = created.or(f.stamp) {
                stamps.push(format!("{name}={s}"));
            }
        }
        let v = version(
            &new,
            Part::VerifiedCrawlers,
            &sources.join(" "),
            (!stamps.is_empty()).then(|| stamps.join(" ")),
        );
        new.versions.insert(Part::VerifiedCrawlers.key().into(), v);
        updated.insert(Part::VerifiedCrawlers, String::new());
    }
    // The whole result must build as the server will build it.
    Lists::build(&new, true)?;
    for part in updated.keys() {
        let before = in_force_len(current, *part);
        let after = new.len(*part).unwrap_or(0);
        if !force && *part != Part::VerifiedCrawlers && after * 2 < before {
            return Err(format!(
                "{}: {after} entries would replace {before}, under half: refused (use --force if that is meant)",
                part.key()
            ));
        }
    }
    Ok((new, updated.into_keys().collect()))
}

/// A source as [`merge`] needs it: where it came from and its timestamp.
pub struct Provenance {
    /// The path or URL.
    pub source: String,
    /// Its own timestamp, if known.
    pub stamp: Option<String>,
}

fn update(dir: &Path, from: &[String], ranges: &[String], force: bool) -> Result<(), String> {
    let (from, ranges): (Vec<String>, Vec<String>) = if from.is_empty() && ranges.is_empty() {
        (
            DEFAULT_SOURCES.iter().map(|s| s.to_string()).collect(),
            DEFAULT_RANGES
                .iter()
                .map(|(n, u)| format!("{n}={u}"))
                .collect(),
        )
    } else {
        (from.to_vec(), ranges.to_vec())
    };
    let ranges = ranges
        .iter()
        .map(|r| split_ranges(r).map(|(n, s)| (n.to_string(), s.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    crate::delivery::install_tls_provider();
    let http = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .user_agent(concat!(
            "tagproxy/",
            env!("CARGO_PKG_VERSION"),
            " (bots update)"
        ))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let (sources, range_sources) = rt.block_on(async {
        let mut sources = Vec::new();
        for src in &from {
            let f = fetch(&http, src).await?;
            let parsed = parse_source(&f.bytes).map_err(|e| format!("{}: {e}", f.source))?;
            sources.push((
                Provenance {
                    source: f.source,
                    stamp: f.stamp,
                },
                parsed,
            ));
        }
        let mut out = Vec::new();
        for (name, src) in &ranges {
            let f = fetch(&http, src).await?;
            let (prefixes, created) =
                parse_ranges(&f.bytes).map_err(|e| format!("{}: {e}", f.source))?;
            out.push((
                name.clone(),
                Provenance {
                    source: f.source,
                    stamp: f.stamp,
                },
                prefixes,
                created,
            ));
        }
        Ok::<_, String>((sources, out))
    })?;
    let file = dir.join(FILE);
    let current = match read_stored(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("warning: {e}: replaced (its lists are not kept)");
            None
        }
    };
    let (new, updated) = merge(current.as_ref(), sources, range_sources, force)?;
    let json = serde_json::to_vec_pretty(&new).map_err(|e| e.to_string())?;
    // The file replaced is kept for `bots rollback`.
    if let Ok(old) = std::fs::read(&file) {
        write_atomic(&dir.join(PREVIOUS), &old)
            .map_err(|e| format!("{}: {e}", dir.join(PREVIOUS).display()))?;
    }
    write_atomic(&file, &json).map_err(|e| format!("{}: {e}", file.display()))?;
    for part in updated {
        let v = &new.versions[part.key()];
        let before = current
            .as_ref()
            .and_then(|b| b.versions.get(part.key()))
            .map_or(COMPILED_IN.to_string(), |v| v.version.clone());
        let unchanged = if before == v.version {
            " (unchanged)"
        } else {
            ""
        };
        println!(
            "{}: {} entries, version {}{unchanged} (was {before}), from {}",
            part.key(),
            new.len(part).unwrap_or(0),
            v.version,
            v.source
        );
    }
    println!(
        "written to {}; a running server uses it within {} s",
        file.display(),
        lists::POLL.as_secs()
    );
    Ok(())
}

fn rollback(dir: &Path) -> Result<(), String> {
    let file = dir.join(FILE);
    let previous = dir.join(PREVIOUS);
    let old = match std::fs::read(&previous) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{}: no previous lists to roll back to",
                previous.display()
            ))
        }
        Err(e) => return Err(format!("{}: {e}", previous.display())),
    };
    let bundle = Bundle::parse(&old).map_err(|e| format!("{}: {e}", previous.display()))?;
    Lists::build(&bundle, true).map_err(|e| format!("{}: {e}", previous.display()))?;
    let cur = std::fs::read(&file).ok();
    write_atomic(&file, &old).map_err(|e| format!("{}: {e}", file.display()))?;
    match cur {
        Some(cur) => write_atomic(&previous, &cur),
        None => std::fs::remove_file(&previous),
    }
    .map_err(|e| format!("{}: {e}", previous.display()))?;
    println!("rolled back: {} holds the previous lists", file.display());
    for part in Part::ALL {
        if let Some(v) = bundle.versions.get(part.key()) {
            println!("{}: version {}, from {}", part.key(), v.version, v.source);
        }
    }
    Ok(())
}

fn status(dir: &Path) -> Result<(), String> {
    let file = dir.join(FILE);
    let stored =
        read_stored(&file).map_err(|e| format!("{e}\nthe server uses the compiled-in lists"))?;
    let lists = Lists::build(&stored.unwrap_or_default(), false)?;
    let now = unix_now();
    for i in &lists.info {
        let v = &i.version;
        let upstream = v
            .source_version
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        println!(
            "{}: {} entries, version {}, from {}{upstream}, fetched {} ({} days ago)",
            i.part.key(),
            i.entries,
            v.version,
            v.source,
            v.fetched_at,
            now.saturating_sub(v.fetched_unix) / 86_400
        );
    }
    let names: Vec<&str> = lists.verified_names().collect();
    if !names.is_empty() {
        println!("verified crawlers: {}", names.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(source: &str) -> Provenance {
        Provenance {
            source: source.into(),
            stamp: None,
        }
    }

    #[test]
    fn upstream_formats_are_recognised() {
        let robots = br#"{"GPTBot": {"operator": "OpenAI", "respect": "Yes"}, "NewBot ": {}}"#;
        assert_eq!(
            parse_source(robots).unwrap(),
            Source::RobotsJson(vec!["GPTBot".into(), "NewBot".into()])
        );
        let cua = br#"[{"pattern": "Googlebot\\/", "addition_date": "2011/01/01"}, {"pattern": " DVbot"}]"#;
        assert_eq!(
            parse_source(cua).unwrap(),
            Source::CrawlerUserAgents(vec!["Googlebot\\/".into(), " DVbot".into()])
        );
        let bundle = br#"{"format": "tagproxy-bot-lists/1", "ai_crawlers": ["A"]}"#;
        assert!(matches!(parse_source(bundle).unwrap(), Source::Bundle(_)));
        for (bad, why) in [
            (&b"nope"[..], "not JSON"),
            (b"[]", "not a bot list"),
            (b"{}", "not a bot list"),
            (br#"[{"url": "x"}]"#, "[0]: no \"pattern\""),
            (br#"{"prefixes": []}"#, "--ranges"),
            (br#"{"format": "tagproxy-bot-lists/1"}"#.as_slice(), ""),
        ] {
            match parse_source(bad) {
                Err(e) => assert!(e.contains(why), "{e}"),
                // A bundle with no list is valid and changes nothing.
                Ok(Source::Bundle(b)) => assert!(Part::ALL.iter().all(|p| !b.has(*p))),
                Ok(other) => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn range_files_in_google_format_or_text() {
        let google = br#"{"creationTime": "2026-11-30T22:00:00.000000", "prefixes": [{"ipv6Prefix": "2001:4860:4801:10::/64"}, {"ipv4Prefix": "66.249.64.0/27"}]}"#;
        let (p, created) = parse_ranges(google).unwrap();
        assert_eq!(p, ["2001:4860:4801:10::/64", "66.249.64.0/27"]);
        assert_eq!(created.as_deref(), Some("2026-11-30T22:00:00.000000"));
        let (p, created) = parse_ranges(b"# mine\n127.0.0.0/8\n\n10.1.2.3\n").unwrap();
        assert_eq!(p, ["127.0.0.0/8", "10.1.2.3"]);
        assert_eq!(created, None);
        assert!(parse_ranges(br#"{"prefixes": []}"#)
            .unwrap_err()
            .contains("no IP prefixes"));
        assert!(parse_ranges(b"300.1.1.1/8\n")
            .unwrap_err()
            .contains("not an IP prefix"));
        assert!(parse_ranges(br#"{"prefixes": [{"ipv4": "1.2.3.4/32"}]}"#).is_err());
        assert!(split_ranges("Googlebot").is_err());
        assert_eq!(split_ranges("A=b=c").unwrap(), ("A", "b=c"));
    }

    #[test]
    fn merge_replaces_only_what_the_sources_hold_and_guards_shrinking() {
        let many: Vec<String> = (0..300).map(|i| format!("Bot{i}")).collect();
        let (new, parts) = merge(
            None,
            vec![(f("/r.json"), Source::RobotsJson(many.clone()))],
            vec![],
            false,
        )
        .unwrap();
        assert_eq!(parts, [Part::AiCrawlers]);
        assert_eq!(new.ai_crawlers.as_ref().unwrap().len(), 300);
        assert!(new.crawlers.is_none(), "the compiled-in crawler list stays");
        assert_eq!(new.versions["ai_crawlers"].source, "/r.json");

        // A list under half the one in force is refused without --force.
        let few = vec!["OnlyBot".to_string()];
        let e = merge(
            Some(&new),
            vec![(f("/r2.json"), Source::RobotsJson(few.clone()))],
            vec![],
            false,
        )
        .unwrap_err();
        assert!(e.contains("under half"), "{e}");
        assert!(merge(
            Some(&new),
            vec![(f("/r2.json"), Source::RobotsJson(few))],
            vec![],
            true
        )
        .is_ok());

        // Ranges replace their own name only.
        let (with_ranges, _) = merge(
            Some(&new),
            vec![],
            vec![
                (
                    "GPTBot".into(),
                    f("/g.json"),
                    vec!["127.0.0.0/8".into()],
                    None,
                ),
                (
                    "Googlebot".into(),
                    f("/go.json"),
                    vec!["66.249.64.0/27".into()],
                    Some("t1".into()),
                ),
            ],
            false,
        )
        .unwrap();
        let (again, _) = merge(
            Some(&with_ranges),
            vec![],
            vec![(
                "gptbot".into(),
                f("/g2.json"),
                vec!["10.0.0.0/8".into()],
                None,
            )],
            false,
        )
        .unwrap();
        let v = again.verified_crawlers.as_ref().unwrap();
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v["gptbot"], ["10.0.0.0/8"]);
        assert_eq!(v["Googlebot"], ["66.249.64.0/27"]);
        assert_eq!(again.ai_crawlers, new.ai_crawlers);

        // One list from two sources is ambiguous.
        let e = merge(
            None,
            vec![
                (f("/a"), Source::RobotsJson(many.clone())),
                (f("/b"), Source::RobotsJson(many)),
            ],
            vec![],
            false,
        )
        .unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        // A pattern the regex crate cannot compile fails the update.
        let e = merge(
            None,
            vec![(
                f("/c"),
                Source::CrawlerUserAgents(vec!["(?<=x)y".into(); 2000]),
            )],
            vec![],
            false,
        )
        .unwrap_err();
        assert!(e.contains("does not compile"), "{e}");
    }
}
