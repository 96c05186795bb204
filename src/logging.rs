//! Log setup: human text on a terminal, JSON lines otherwise (SPEC §1), level
//! from `RUST_LOG`. Logs go to stderr; stdout is for command output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

pub fn init(format: Option<LogFormat>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    // Colour only for a person at a terminal: ANSI codes in a log file or a
    // pipe are noise (and `NO_COLOR`, https://no-color.org, turns it off).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Characters a terminal acts on rather than shows: C0 and C1 controls
/// (escape sequences, CR, LF), DEL, and the Unicode line separators and
/// bidirectional overrides that reorder what is shown.
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `s` with each such character shown as a space.
pub fn terminal_safe(s: &str) -> String {
    s.chars()
        .map(|c| if acts_on_terminal(c) { ' ' } else { c })
        .collect()
}

/// JSON text with each such character `\u`-escaped (serde_json escapes
/// only those below U+0020); still the same JSON value.
pub fn json_for_terminal(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if acts_on_terminal(c) {
            use std::fmt::Write as _;
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}
