//! The admin API under `/admin/` (SPEC §10): tokens, the config and tool
//! files over HTTP.
//!
//! Every call needs `Authorization: Bearer <secret>` and is written to the
//! audit log, allowed or refused, with the token's id and name when it was
//! recognised. `401` (with `WWW-Authenticate: Bearer`) for a missing,
//! malformed, unknown, rolled, revoked or expired token; `403` for a token
//! without the endpoint's scope.
//!
//! | endpoint | scope |
//! | --- | --- |
//! | `GET /admin/tokens`, `POST /admin/tokens`, `POST /admin/tokens/{id}/roll`, `DELETE /admin/tokens/{id}` | `tokens:write` |
//! | `GET /admin/config`, `GET /admin/tools/{id}` | `config:read` |
//! | `POST /admin/reload`, `PUT /admin/tools/{id}`, `DELETE /admin/tools/{id}` | `config:write` |
//! | `GET /admin/events` (Server-Sent Events of the trail) | `events:read` |
//!
//! No escalation: a token may create, roll or revoke only tokens whose
//! scopes it holds itself (`403` otherwise), so `tokens:write` alone cannot
//! mint a wider token.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::{AuditEntry, Outcome};
use super::redact::{redact, secret_values, toml_to_json, REDACTED};
use super::tokens::{self, AuthError, Scope, StoreError, Token};
use super::Admin;
use crate::app::{Plan, ToolChange};
use crate::config::{self, ConfigError};
use crate::proxy::body::{self, ProxyBody};
use crate::rules::Secrets;

/// Largest token request body (`POST /admin/tokens`), in bytes.
pub const MAX_TOKEN_BODY: usize = 16 * 1024;
/// Largest tool file accepted by `PUT /admin/tools/{id}`, in bytes.
pub const MAX_TOOL_BODY: usize = 1024 * 1024;
/// Longest tool id accepted.
const MAX_TOOL_ID: usize = 100;

/// What a request asks for, from its method and path.
enum Endpoint {
    TokensList,
    TokensCreate,
    TokensRoll(String),
    TokensRevoke(String),
    ConfigRead,
    Reload,
    ToolGet(String),
    ToolPut(String),
    ToolDelete(String),
    /// The trail as Server-Sent Events.
    Events,
    /// `GET /admin/bots`: the last 24 h of crawler requests.
    Bots,
    /// A known path with another method: `405` with these in `Allow`.
    WrongMethod(&'static str),
    Unknown,
}

impl Endpoint {
    fn of(method: &Method, path: &str) -> Endpoint {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::GET, ["admin", "tokens"]) => Endpoint::TokensList,
            (&Method::POST, ["admin", "tokens"]) => Endpoint::TokensCreate,
            (&Method::POST, ["admin", "tokens", id, "roll"]) => {
                Endpoint::TokensRoll(id.to_string())
            }
            (&Method::DELETE, ["admin", "tokens", id]) => Endpoint::TokensRevoke(id.to_string()),
            (&Method::GET, ["admin", "config"]) => Endpoint::ConfigRead,
            (&Method::POST, ["admin", "reload"]) => Endpoint::Reload,
            (&Method::GET, ["admin", "events"]) => Endpoint::Events,
            (&Method::GET, ["admin", "bots"]) => Endpoint::Bots,
            // The rest of the path is the id, slashes and all, so that a
            // traversal attempt reaches the id check and is refused there.
            (m, ["admin", "tools", rest @ ..]) if !rest.is_empty() => {
                let id = rest.join("/");
                match *m {
                    Method::GET => Endpoint::ToolGet(id),
                    Method::PUT => Endpoint::ToolPut(id),
                    Method::DELETE => Endpoint::ToolDelete(id),
                    _ => Endpoint::WrongMethod("GET, PUT, DELETE"),
                }
            }
            (_, ["admin", "tokens"]) => Endpoint::WrongMethod("GET, POST"),
            (_, ["admin", "tokens", _, "roll"]) | (_, ["admin", "reload"]) => {
                Endpoint::WrongMethod("POST")
            }
            (_, ["admin", "tokens", _]) => Endpoint::WrongMethod("DELETE"),
            (_, ["admin", "config"]) | (_, ["admin", "events"]) | (_, ["admin", "bots"]) => {
                Endpoint::WrongMethod("GET")
            }
            _ => Endpoint::Unknown,
        }
    }

    /// The audit action and the scope the call needs (`None`: any valid
    /// token, for unknown endpoints).
    fn action(&self) -> (&'static str, Option<Scope>) {
        match self {
            Endpoint::TokensList => ("token.list", Some(Scope::TokensWrite)),
            Endpoint::TokensCreate => ("token.create", Some(Scope::TokensWrite)),
            Endpoint::TokensRoll(_) => ("token.roll", Some(Scope::TokensWrite)),
            Endpoint::TokensRevoke(_) => ("token.revoke", Some(Scope::TokensWrite)),
            Endpoint::ConfigRead => ("config.read", Some(Scope::ConfigRead)),
            Endpoint::Reload => ("config.reload", Some(Scope::ConfigWrite)),
            Endpoint::ToolGet(_) => ("tools.get", Some(Scope::ConfigRead)),
            Endpoint::ToolPut(_) => ("tools.put", Some(Scope::ConfigWrite)),
            Endpoint::ToolDelete(_) => ("tools.delete", Some(Scope::ConfigWrite)),
            Endpoint::Events => ("events.read", Some(Scope::EventsRead)),
            Endpoint::Bots => ("bots.read", Some(Scope::EventsRead)),
            Endpoint::WrongMethod(_) | Endpoint::Unknown => ("unknown", None),
        }
    }
}

/// Paths `GET /admin/bots` lists (the most requested).
const BOTS_TOP_PATHS: usize = 50;

/// The answer to one call, and what the audit log says about it.
struct Answer {
    /// Boxed: answers travel in `Err`s, which should stay small.
    response: Box<Response<ProxyBody>>,
    outcome: Outcome,
    detail: Option<String>,
}

impl Answer {
    fn ok(status: StatusCode, body: Value, detail: impl Into<String>) -> Answer {
        Answer {
            response: Box::new(json_response(status, &body)),
            outcome: Outcome::Allowed,
            detail: Some(detail.into()),
        }
    }

    /// Allowed, but the operation failed (bad input, not found, I/O).
    fn failed(status: StatusCode, message: impl Into<String>) -> Answer {
        let message = message.into();
        Answer {
            response: Box::new(error_json(status, &message)),
            outcome: Outcome::Failed,
            detail: Some(message),
        }
    }

    fn problems(status: StatusCode, error: &str, problems: Vec<String>) -> Answer {
        Answer {
            response: Box::new(json_response(
                status,
                &json!({"error": error, "problems": problems}),
            )),
            outcome: Outcome::Failed,
            detail: Some(format!("{error}: {}", problems.join("; "))),
        }
    }

    /// Refused for escalation (`403`).
    fn refused(message: String) -> Answer {
        Answer {
            response: Box::new(error_json(StatusCode::FORBIDDEN, &message)),
            outcome: Outcome::Refused,
            detail: Some(message),
        }
    }
}

/// Answers one `/admin/…` call, audited.
pub(super) async fn handle(
    req: Request<Incoming>,
    remote: SocketAddr,
    admin: &Admin,
) -> Response<ProxyBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let endpoint = Endpoint::of(&method, &path);
    let (action, scope) = endpoint.action();
    let entry = AuditEntry::new(
        &remote.to_string(),
        method.as_str(),
        &path,
        action,
        Outcome::Refused,
    );
    let header = req.headers().get(http::header::AUTHORIZATION);
    let auth = match scope {
        Some(scope) => blocking(|| admin.tokens.authorize(header, scope)),
        None => tokens::bearer(header).and_then(|s| blocking(|| admin.tokens.authenticate(s))),
    };
    let caller = match auth {
        Ok(token) => token,
        Err(e) => {
            let mut entry = entry.status(e.status().as_u16()).detail(e.to_string());
            if let Some((id, name)) = e.token() {
                entry = entry.token(id, name);
            }
            blocking(|| admin.audit.record(&entry));
            return auth_error(&e);
        }
    };
    let answer = match endpoint {
        Endpoint::TokensList => blocking(|| tokens_list(admin)),
        Endpoint::TokensCreate => tokens_create(admin, &caller, req.into_body()).await,
        Endpoint::TokensRoll(id) => blocking(|| tokens_change(admin, &caller, &id, true)),
        Endpoint::TokensRevoke(id) => blocking(|| tokens_change(admin, &caller, &id, false)),
        Endpoint::ConfigRead => config_read(admin),
        Endpoint::Reload => reload(admin).await,
        Endpoint::ToolGet(id) => blocking(|| tool_get(admin, &id)),
        Endpoint::ToolPut(id) => tool_put(admin, &id, req.into_body()).await,
        Endpoint::ToolDelete(id) => tool_delete(admin, &id).await,
        Endpoint::Events => events(admin, req.uri().query()),
        Endpoint::Bots => {
            let mut v = crate::bots::insights::Insights::global().last_24h(BOTS_TOP_PATHS);
            v["lists"] = crate::bots::lists::info_json();
            Answer::ok(StatusCode::OK, v, "crawler requests, last 24 h")
        }
        Endpoint::WrongMethod(allow) => {
            let mut a = Answer::failed(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method not allowed here (allowed: {allow})"),
            );
            a.response
                .headers_mut()
                .insert("allow", HeaderValue::from_static(allow));
            a
        }
        Endpoint::Unknown => Answer::failed(StatusCode::NOT_FOUND, "no such admin endpoint"),
    };
    let mut entry = entry
        .token(&caller.id, &caller.name)
        .status(answer.response.status().as_u16());
    entry.result = answer.outcome;
    if let Some(detail) = &answer.detail {
        entry = entry.detail(detail);
    }
    blocking(|| admin.audit.record(&entry));
    *answer.response
}

/// `GET /admin/events`: the trail kept so far, then live, as Server-Sent
/// Events (`event: trail`, the record's JSON as `data`, its `seq` as
/// `id`); filtered by the query's `tool`, `event` and `outcome`.
fn events(admin: &Admin, query: Option<&str>) -> Answer {
    let filter = crate::trail::Filter::from_query(query);
    let detail = format!(
        "stream (tool={}, event={}, outcome={})",
        filter.tool.as_deref().unwrap_or("*"),
        filter.event.as_deref().unwrap_or("*"),
        filter.outcome.as_deref().unwrap_or("*")
    );
    let trail = &admin.metrics.trail;
    let body = crate::trail::sse_body(trail, filter, json!({"scope": "all"}));
    Answer {
        response: Box::new(crate::trail::sse_response(body)),
        outcome: Outcome::Allowed,
        detail: Some(detail),
    }
}

/// Runs file I/O that syncs to disk (token store, audit log, tool files)
/// without stalling the runtime's other tasks, the collector's included.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The `401` / `403` / `500` answer to a failed authorization.
pub(super) fn auth_error(e: &AuthError) -> Response<ProxyBody> {
    let mut response = error_json(e.status(), &e.to_string());
    if e.status() == StatusCode::UNAUTHORIZED {
        // RFC 6750 §3: a token was presented but is not valid.
        let value = if matches!(e, AuthError::Missing) {
            r#"Bearer realm="tagproxy admin""#
        } else {
            r#"Bearer realm="tagproxy admin", error="invalid_token""#
        };
        response
            .headers_mut()
            .insert("www-authenticate", HeaderValue::from_static(value));
    }
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(body::full(body.to_string()))
        .expect("static response")
}

fn error_json(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json_response(status, &json!({ "error": message }))
}

/// Reads a body of at most `limit` bytes.
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Answer> {
    match Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Answer::failed(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {limit} bytes"),
        )),
        Err(e) => Err(Answer::failed(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
    }
}

fn store_error(e: StoreError) -> Answer {
    match &e {
        StoreError::NotFound(_) => Answer::failed(StatusCode::NOT_FOUND, e.to_string()),
        StoreError::Invalid(m) if m.contains("already exists") => {
            Answer::failed(StatusCode::CONFLICT, e.to_string())
        }
        StoreError::Invalid(_) => Answer::failed(StatusCode::BAD_REQUEST, e.to_string()),
        StoreError::Io { .. } | StoreError::Corrupt { .. } => {
            tracing::error!(error = %e, "token store");
            Answer::failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

fn tokens_list(admin: &Admin) -> Answer {
    match admin.tokens.list() {
        Ok(list) => {
            let tokens: Vec<Value> = list.iter().map(Token::public_json).collect();
            let n = tokens.len();
            Answer::ok(
                StatusCode::OK,
                json!({ "tokens": tokens }),
                format!("{n} token(s)"),
            )
        }
        Err(e) => store_error(e),
    }
}

/// `POST /admin/tokens` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    expires_in: Option<String>,
}

fn missing_scopes(caller: &Token, wanted: &BTreeSet<Scope>) -> Option<String> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|s| !caller.scopes.contains(s))
        .map(|s| s.as_str())
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

async fn tokens_create(admin: &Admin, caller: &Token, body: Incoming) -> Answer {
    let body = match read_body(body, MAX_TOKEN_BODY).await {
        Ok(b) => b,
        Err(a) => return a,
    };
    let request: CreateBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return Answer::failed(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let scopes = match request
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<BTreeSet<_>, _>>()
    {
        Ok(s) if s.is_empty() => {
            return Answer::failed(StatusCode::BAD_REQUEST, "a token needs at least one scope")
        }
        Ok(s) => s,
        Err(e) => return Answer::failed(StatusCode::BAD_REQUEST, e),
    };
    let expires = match request
        .expires_in
        .as_deref()
        .map(tokens::parse_duration)
        .transpose()
    {
        Ok(e) => e,
        Err(e) => return Answer::failed(StatusCode::BAD_REQUEST, format!("expires_in: {e}")),
    };
    if let Some(missing) = missing_scopes(caller, &scopes) {
        return Answer::refused(format!(
            "no escalation: the calling token lacks {missing}, so it cannot grant it"
        ));
    }
    match blocking(|| admin.tokens.create(&request.name, scopes, expires)) {
        Ok((token, secret)) => Answer::ok(
            StatusCode::CREATED,
            json!({"token": token.public_json(), "secret": secret.expose()}),
            format!("created {} {:?}", token.id, token.name),
        ),
        Err(e) => store_error(e),
    }
}

/// Roll (`roll`) or revoke a token the caller covers.
fn tokens_change(admin: &Admin, caller: &Token, id: &str, roll: bool) -> Answer {
    let target = match admin.tokens.get(id) {
        Ok(t) => t,
        Err(e) => return store_error(e),
    };
    if let Some(missing) = missing_scopes(caller, &target.scopes) {
        return Answer::refused(format!(
            "no escalation: token {} holds {missing}, which the calling token lacks",
            target.id
        ));
    }
    if roll {
        match admin.tokens.roll(id) {
            Ok((token, secret)) => Answer::ok(
                StatusCode::OK,
                json!({"token": token.public_json(), "secret": secret.expose()}),
                format!("rolled {} {:?}", token.id, token.name),
            ),
            Err(e) => store_error(e),
        }
    } else {
        match admin.tokens.revoke(id) {
            Ok(token) => Answer::ok(
                StatusCode::OK,
                json!({"revoked": token.public_json()}),
                format!("revoked {} {:?}", token.id, token.name),
            ),
            Err(e) => store_error(e),
        }
    }
}

/// `GET /admin/config`: the main file and every tool file as JSON, and the
/// variables' values, with secrets redacted.
fn config_read(admin: &Admin) -> Answer {
    let state = admin.config.load();
    let secrets = secret_values(&state.variables);
    let mut config = toml_to_json(&state.text).unwrap_or(Value::Null);
    redact(&mut config, &secrets);
    let mut tools = serde_json::Map::new();
    for s in &state.sources {
        let mut v = toml_to_json(&s.text).unwrap_or(Value::Null);
        redact(&mut v, &secrets);
        tools.insert(s.id.clone(), v);
    }
    let mut variables = serde_json::Map::new();
    let mut names: Vec<_> = state.variables.keys().collect();
    names.sort();
    for name in names {
        let var = &state.variables[name];
        let mut value = if var.secret {
            Value::String(REDACTED.into())
        } else {
            var.value.clone()
        };
        redact(&mut value, &secrets);
        variables.insert(name.clone(), value);
    }
    Answer::ok(
        StatusCode::OK,
        json!({
            "path": state.path.display().to_string(),
            "config": config,
            "variables": variables,
            "tools": tools,
        }),
        "config",
    )
}

async fn reload(admin: &Admin) -> Answer {
    match admin.reload.reload("POST /admin/reload").await {
        Ok(tools) => Answer::ok(
            StatusCode::OK,
            json!({"ok": true, "tools": tools}),
            format!("reloaded, {tools} tool(s)"),
        ),
        Err(problems) => Answer::problems(
            StatusCode::UNPROCESSABLE_ENTITY,
            "config reload failed; the previous config stays in force",
            problems.lines().map(str::to_string).collect(),
        ),
    }
}

/// A tool id as tool files name them: letters, digits, `_` and `-` (so no
/// `/`, `.`, `..` or `%`: the path stays inside the tools folder).
fn valid_tool_id(id: &str) -> Result<(), Answer> {
    let ok = !id.is_empty()
        && id.len() <= MAX_TOOL_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Answer::failed(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid tool id {id:?}: 1-{MAX_TOOL_ID} letters, digits, '_' and '-' (the tool file's name)"
            ),
        ))
    }
}

fn tool_path(tools_dir: &Path, id: &str) -> PathBuf {
    tools_dir.join(format!("{id}.toml"))
}

fn tool_get(admin: &Admin, id: &str) -> Answer {
    if let Err(a) = valid_tool_id(id) {
        return a;
    }
    let path = tool_path(&admin.config.load().tools_dir, id);
    match std::fs::read(&path) {
        Ok(text) => Answer {
            response: Box::new(
                Response::builder()
                    .header("content-type", "application/toml")
                    .header("cache-control", "no-store")
                    .body(body::full(text))
                    .expect("static response"),
            ),
            outcome: Outcome::Allowed,
            detail: Some(format!("tool {id}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Answer::failed(StatusCode::NOT_FOUND, format!("no tool {id:?}"))
        }
        Err(e) => Answer::failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read tool {id:?}: {e}"),
        ),
    }
}

/// Problems as `line:col: message` for the changed tool file, and
/// `FILE:line:col: message` for any other file.
fn problem_lines(e: &ConfigError, changed: &Path) -> Vec<String> {
    e.0.iter()
        .map(|p| {
            if p.file == changed {
                format!("{}:{}: {}", p.line, p.col, p.message)
            } else {
                p.to_string()
            }
        })
        .collect()
}

/// Validates the config with `change` made, exactly as `serve` would load
/// it (secrets required); the problems otherwise.
fn validate(admin: &Admin, change: ToolChange<'_>) -> Result<PathBuf, Answer> {
    let path = admin.config.load().path.clone();
    let loaded = config::load(&path).map_err(|e| {
        Answer::problems(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the main config file does not load",
            e.0.iter().map(ToString::to_string).collect(),
        )
    })?;
    let tool_file = tool_path(&loaded.tools_dir(), change.id);
    match Plan::load_with(&loaded, Secrets::Required, Some(change)) {
        Ok(_) => Ok(tool_file),
        Err(e) => Err(Answer::problems(
            StatusCode::UNPROCESSABLE_ENTITY,
            if change.text.is_some() {
                "invalid tool file"
            } else {
                "the config would not load without this tool"
            },
            problem_lines(&e, &tool_file),
        )),
    }
}

/// Replaces `path` with `bytes`: a temporary file beside it (not named
/// `*.toml`, so neither the loader nor the watcher sees it), synced,
/// renamed over, and the folder synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("tool");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

async fn tool_put(admin: &Admin, id: &str, body: Incoming) -> Answer {
    if let Err(a) = valid_tool_id(id) {
        return a;
    }
    let body = match read_body(body, MAX_TOOL_BODY).await {
        Ok(b) => b,
        Err(a) => return a,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return Answer::failed(StatusCode::BAD_REQUEST, "a tool file is UTF-8 TOML");
    };
    let _one_at_a_time = admin.tools_lock.lock().await;
    let path = match blocking(|| {
        validate(
            admin,
            ToolChange {
                id,
                text: Some(text),
            },
        )
    }) {
        Ok(p) => p,
        Err(a) => return a,
    };
    let existed = path.exists();
    if let Err(e) = blocking(|| write_atomically(&path, text.as_bytes())) {
        return Answer::failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write {}: {e}", path.display()),
        );
    }
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    after_change(
        admin,
        id,
        status,
        if existed { "replaced" } else { "created" },
    )
    .await
}

async fn tool_delete(admin: &Admin, id: &str) -> Answer {
    if let Err(a) = valid_tool_id(id) {
        return a;
    }
    let _one_at_a_time = admin.tools_lock.lock().await;
    let current = tool_path(&admin.config.load().tools_dir, id);
    if !current.exists() {
        return Answer::failed(StatusCode::NOT_FOUND, format!("no tool {id:?}"));
    }
    let path = match blocking(|| validate(admin, ToolChange { id, text: None })) {
        Ok(p) => p,
        Err(a) => return a,
    };
    let removed = blocking(|| {
        std::fs::remove_file(&path)
            .and_then(|()| std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all())
    });
    if let Err(e) = removed {
        return Answer::failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot remove {}: {e}", path.display()),
        );
    }
    after_change(admin, id, StatusCode::OK, "deleted").await
}

/// Reloads after a tool file changed on disk.
async fn after_change(admin: &Admin, id: &str, status: StatusCode, verb: &str) -> Answer {
    match admin.reload.reload("admin API tool change").await {
        Ok(tools) => Answer::ok(
            status,
            json!({"ok": true, "tool": id, verb: true, "tools": tools}),
            format!("tool {id} {verb}, {tools} tool(s) running"),
        ),
        // Validated a moment ago: only a concurrent edit of another file
        // gets here. The file is on disk; say so.
        Err(problems) => Answer::problems(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the tool file was written but the reload failed; the previous config stays in force",
            problems.lines().map(str::to_string).collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_ids_cannot_leave_the_tools_folder() {
        for bad in [
            "", "..", "../x", "a/b", "a.b", "%2e%2e", "a%2Fb", "a b", "é", "a\\b",
        ] {
            assert!(valid_tool_id(bad).is_err(), "{bad:?}");
        }
        assert!(valid_tool_id(&"a".repeat(101)).is_err());
        for good in ["ga4", "meta-pixel", "hook_2"] {
            assert!(valid_tool_id(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn routes() {
        let p = |m: Method, path: &str| Endpoint::of(&m, path).action().0;
        assert_eq!(p(Method::GET, "/admin/tokens"), "token.list");
        assert_eq!(p(Method::POST, "/admin/tokens/tok_1/roll"), "token.roll");
        assert_eq!(p(Method::DELETE, "/admin/tokens/tok_1"), "token.revoke");
        assert_eq!(p(Method::PUT, "/admin/tools/../../etc"), "tools.put");
        assert!(
            matches!(Endpoint::of(&Method::PUT, "/admin/tools/../../etc"), Endpoint::ToolPut(id) if id == "../../etc")
        );
        assert!(matches!(
            Endpoint::of(&Method::PATCH, "/admin/tools/x"),
            Endpoint::WrongMethod("GET, PUT, DELETE")
        ));
        assert!(matches!(
            Endpoint::of(&Method::GET, "/admin/reload"),
            Endpoint::WrongMethod("POST")
        ));
        assert_eq!(p(Method::GET, "/admin/nope"), "unknown");
    }
}
