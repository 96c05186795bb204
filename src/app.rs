//! The running application: config turned into tools, variables, a delivery
//! dispatcher and the routes under `prefix`. Built once per config.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::admin::tokens::TokenStore;
use crate::bots::BotDetector;
use crate::collector::dedupe::RecentIds;
use crate::config::{ConfigError, Loaded, LocationHeaders, Problem, Settings, TrustedProxies};
use crate::consent::ConsentPolicy;
use crate::delivery::{Engine, Paths};
use crate::event::privacy::Privacy;
use crate::event::ua::UaParser;
use crate::event::Event;
use crate::metrics::Metrics;
use crate::proxy::assets::{self, Asset};
use crate::proxy::body::ProxyBody;
use crate::proxy::PrefixHandler;
use crate::rules::template::Variables;
use crate::rules::{Secrets, Triggers};
use crate::tools::{self, Tool};

/// What `check` validates and `serve` runs: everything but the runtime parts.
pub struct Plan {
    pub tools: Vec<Tool>,
    pub variables: Variables,
    pub triggers: Triggers,
    /// Remarks for `check` that do not stop the config from running.
    pub warnings: Vec<String>,
    /// The tool files the plan was built from (enabled or not), for
    /// `GET /admin/config`.
    pub sources: Vec<tools::ToolSource>,
}

/// A change to the tools folder, validated before it is made on disk: tool
/// `id`'s file replaced by (or created with) `text`, or removed (`None`).
#[derive(Debug, Clone, Copy)]
pub struct ToolChange<'a> {
    pub id: &'a str,
    pub text: Option<&'a str>,
}

impl Plan {
    /// Loads variables and every tool file; collects every problem.
    pub fn load(loaded: &Loaded, secrets: Secrets) -> Result<Plan, ConfigError> {
        Self::load_with(loaded, secrets, None)
    }

    /// Like [`Plan::load`], as if `change` had been made to the tools
    /// folder: what the admin API checks before it writes a tool file.
    pub fn load_with(
        loaded: &Loaded,
        secrets: Secrets,
        change: Option<ToolChange<'_>>,
    ) -> Result<Plan, ConfigError> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let (variables, mut variable_problems) =
            crate::rules::variables(loaded, secrets, &mut warnings);
        problems.append(&mut variable_problems);
        let (triggers, mut trigger_problems) = crate::rules::triggers(loaded, &variables);
        problems.append(&mut trigger_problems);
        let mut sources = tools::read_sources(&loaded.tools_dir()).unwrap_or_else(|mut p| {
            problems.append(&mut p);
            Vec::new()
        });
        if let Some(change) = change {
            sources.retain(|s| s.id != change.id);
            if let Some(text) = change.text {
                sources.push(tools::ToolSource {
                    id: change.id.to_string(),
                    path: loaded.tools_dir().join(format!("{}.toml", change.id)),
                    text: text.to_string(),
                });
                sources.sort_by(|a, b| a.path.cmp(&b.path));
            }
        }
        let tools = tools::from_sources(&sources, &variables, &triggers).unwrap_or_else(|mut p| {
            problems.append(&mut p);
            Vec::new()
        });
        warnings.extend(
            tools
                .iter()
                .flat_map(|t| t.warnings.iter().map(ToString::to_string)),
        );
        warnings.extend(consent_problems(loaded, &tools, &sources, &mut problems));
        for tool in &tools {
            let path = loaded.tools_dir().join(format!("{}.toml", tool.id));
            let text = text_of(&sources, &tool.id);
            warnings.extend(tool.adapter.check_warnings(&path, text, &tool.file));
            if tool.file.automated() == crate::tools::Automated::default()
                && tool.actions.is_empty()
            {
                let at = tool.file.adapter.span().start;
                warnings.push(
                    Problem::at(
                        &path,
                        text,
                        at,
                        format!(
                            "tool `{}` has no automated action and no custom action: it never sends anything (add [automated] or [[actions]])",
                            tool.id
                        ),
                    )
                    .to_string(),
                );
            }
        }
        if problems.is_empty() {
            Ok(Plan {
                tools,
                variables,
                triggers,
                warnings,
                sources,
            })
        } else {
            Err(ConfigError(problems))
        }
    }
}

/// The text of tool `id`'s file among `sources` ("" when absent).
fn text_of<'a>(sources: &'a [tools::ToolSource], id: &str) -> &'a str {
    sources
        .iter()
        .find(|s| s.id == id)
        .map_or("", |s| s.text.as_str())
}

/// Consent checks across files: purpose ids are unique, tools name only
/// configured purposes; tools without purposes run without consent (a
/// warning, as in SPEC §9).
fn consent_problems(
    loaded: &Loaded,
    tools: &[Tool],
    sources: &[tools::ToolSource],
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let consent = &loaded.config.consent;
    let mut warnings = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in &consent.purposes {
        if !seen.insert(p.get_ref().id.as_str()) {
            problems.push(Problem::at(
                &loaded.path,
                &loaded.text,
                p.span().start,
                format!("consent purpose `{}` is defined twice", p.get_ref().id),
            ));
        }
    }
    for p in &consent.purposes {
        tcf_purpose_problems(loaded, p.get_ref(), problems);
    }
    if !consent.enabled {
        return warnings;
    }
    let policy = ConsentPolicy::new(consent);
    for tool in tools {
        let path = loaded.tools_dir().join(format!("{}.toml", tool.id));
        let text = text_of(sources, &tool.id);
        for purpose in &tool.file.purposes {
            if !policy.has_purpose(purpose) {
                let at = text.find("purposes").unwrap_or(0);
                problems.push(Problem::at(
                    &path,
                    text,
                    at,
                    format!("unknown consent purpose `{purpose}`"),
                ));
            }
        }
        if tool.file.purposes.is_empty() {
            warnings.push(format!(
                "{}: tool `{}` lists no consent purposes, so it runs without consent",
                path.display(),
                tool.id
            ));
        }
    }
    warnings
}

/// A purpose's IAB purpose ids: each exists in TCF v2.2 (1-11), and each
/// `tcf_legitimate_interest` id is one of its `tcf_purposes` that the TCF
/// v2.2 policy lets rest on legitimate interest (not 1, 3, 4, 5 or 6).
fn tcf_purpose_problems(
    loaded: &Loaded,
    p: &crate::config::PurposeConfig,
    problems: &mut Vec<Problem>,
) {
    let mut at = |n: &toml::Spanned<u8>, message: String| {
        problems.push(Problem::at(
            &loaded.path,
            &loaded.text,
            n.span().start,
            message,
        ));
    };
    let exists = |n: u8| crate::consent::tcf::PURPOSES.contains(&n);
    for n in &p.tcf_purposes {
        if !exists(*n.get_ref()) {
            at(
                n,
                format!(
                    "IAB purpose {} does not exist: TCF v2.2 defines purposes 1 to 11",
                    n.get_ref()
                ),
            );
        }
    }
    for n in &p.tcf_legitimate_interest {
        let id = *n.get_ref();
        if !exists(id) {
            at(
                n,
                format!("IAB purpose {id} does not exist: TCF v2.2 defines purposes 1 to 11"),
            );
        } else if !crate::consent::tcf::legitimate_interest_allowed(id) {
            at(
                n,
                format!(
                    "legitimate interest is not allowed for IAB purpose {id}: \
                     TCF v2.2 allows only consent for purposes 1, 3, 4, 5 and 6"
                ),
            );
        } else if !p.tcf_purposes.iter().any(|m| m.get_ref() == &id) {
            at(
                n,
                format!(
                    "IAB purpose {id} is in tcf_legitimate_interest but not in tcf_purposes of purpose `{}`",
                    p.id
                ),
            );
        }
    }
}

/// State that outlives config reloads: the delivery engine (and what it
/// has queued), counters, recently seen event ids.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub recent_ids: Arc<RecentIds>,
    pub engine: Arc<Engine>,
    /// The token store in `data_dir` (the events API's Bearer tokens).
    pub tokens: Arc<TokenStore>,
}

impl Shared {
    /// Opens the delivery store; needs a Tokio runtime. `[delivery]` is read
    /// here only, so its changes apply after a restart.
    pub fn start(loaded: &Loaded) -> std::io::Result<Shared> {
        let metrics = Arc::new(Metrics::default());
        let paths = Paths {
            spool_dir: loaded.spool_dir(),
            data_dir: loaded.data_dir(),
        };
        // 100 000 ids per generation, rotated at least every 12 h: a retry
        // within 12–24 h is recognised, in at most 4.5 MB (`RecentIds::bytes`).
        let recent_ids = Arc::new(RecentIds::new(
            100_000,
            std::time::Duration::from_secs(12 * 3600),
        ));
        let engine = Engine::start(&loaded.config.delivery, paths, metrics.clone(), &mut |id| {
            recent_ids.first_time(id);
        })?;
        Ok(Shared {
            metrics,
            recent_ids,
            engine,
            tokens: Arc::new(TokenStore::open(&loaded.data_dir())),
        })
    }
}

pub struct App {
    pub settings: Settings,
    pub tools: Vec<Tool>,
    pub variables: Variables,
    pub triggers: Triggers,
    pub engine: Arc<Engine>,
    pub ua: UaParser,
    pub trusted: TrustedProxies,
    pub location: LocationHeaders,
    pub max_event_bytes: u64,
    pub privacy: Privacy,
    pub consent: ConsentPolicy,
    pub bots: Arc<BotDetector>,
    /// Events of bots are counted and dropped (`[bots] skip_events`).
    pub skip_bot_events: bool,
    /// `[bots] score_threshold`: a bot scores below it.
    pub bot_score_threshold: u8,
    pub metrics: Arc<Metrics>,
    /// Event ids seen recently, so retried batches are delivered once.
    pub recent_ids: Arc<RecentIds>,
    /// Tokens for `{prefix}/api/events`.
    pub tokens: Arc<TokenStore>,
    collector_path: String,
    /// `{prefix}/api/events`.
    events_api_path: String,
    /// `{prefix}/debug`.
    debug_path: String,
    /// Secret variables' values, redacted from the trail.
    trail_secrets: Arc<[String]>,
    /// Ids of the tool files with `enabled = false`, for the trail.
    disabled_tools: Vec<String>,
}

impl App {
    /// Builds the app for one config around the long-lived `shared` state.
    pub fn start(loaded: &Loaded, plan: Plan, shared: &Shared) -> App {
        let metrics = shared.metrics.clone();
        let config = &loaded.config;
        shared
            .engine
            .ensure_tools(&plan.tools.iter().map(|t| t.id.clone()).collect::<Vec<_>>());
        shared.engine.set_answer_readers(
            plan.tools
                .iter()
                .filter_map(|t| Some((t.id.clone(), t.adapter.answer_reader()?)))
                .collect(),
        );
        let trail_secrets = crate::admin::redact::secret_values(&plan.variables).into();
        let disabled_tools = plan
            .sources
            .iter()
            .filter(|s| !plan.tools.iter().any(|t| t.id == s.id))
            .map(|s| s.id.clone())
            .collect();
        shared.engine.set_batching(
            plan.tools
                .iter()
                .map(|t| (t.id.clone(), t.adapter.batching())),
        );
        App {
            trail_secrets,
            disabled_tools,
            debug_path: format!("{}/debug", config.server.prefix.0),
            settings: config.settings.clone(),
            engine: shared.engine.clone(),
            tools: plan.tools,
            variables: plan.variables,
            triggers: plan.triggers,
            ua: UaParser::default(),
            trusted: config.server.trusted_proxies.clone(),
            location: config.location.clone(),
            max_event_bytes: config.server.max_event_bytes,
            privacy: Privacy::from(&config.settings),
            consent: ConsentPolicy::new(&config.consent),
            bots: Arc::new(BotDetector::new(&config.bots.extra_user_agents)),
            skip_bot_events: config.bots.skip_events,
            bot_score_threshold: config.bots.score_threshold,
            metrics: metrics.clone(),
            recent_ids: shared.recent_ids.clone(),
            tokens: shared.tokens.clone(),
            collector_path: format!("{}/t", config.server.prefix.0),
            events_api_path: format!("{}/api/events", config.server.prefix.0),
        }
    }

    /// Deliveries, requests that can never be sent, browser instructions
    /// and tool cookies for one event.
    pub fn fan_out(&self, event: &Event) -> crate::rules::FanOut {
        let out = crate::rules::fan_out(
            event,
            &self.tools,
            &self.triggers,
            &self.variables,
            &self.consent,
        );
        Metrics::add(&self.metrics.consent_blocked, out.consent_withheld as u64);
        out
    }

    /// Whether a tool counts `event` as a key event (conversion), which
    /// makes the visitor's session engaged.
    pub fn is_key_event(&self, event: &Event) -> bool {
        self.tools.iter().any(|t| t.adapter.key_event(event))
    }

    /// Records a processed event in the trail (`GET /admin/events`,
    /// `{prefix}/debug`): `dropped` when it reaches no tool (`bot`,
    /// `duplicate`), `out` what its fan-out gave (`None` when it was not
    /// fanned out).
    pub fn observe(
        &self,
        event: &Event,
        dropped: Option<&'static str>,
        out: Option<&mut crate::rules::FanOut>,
    ) {
        tracing::debug!(event_id = %event.id, kind = ?event.kind, name = %event.name, dropped, "event");
        let (shared, trace, deliveries, invalid) = match out {
            Some(out) => (
                out.record.clone(),
                Some(std::mem::take(&mut out.trace)),
                &out.deliveries[..],
                out.invalid
                    .iter()
                    .map(|(d, why)| (d, why.to_string()))
                    .collect::<Vec<_>>(),
            ),
            None => (None, None, &[][..], Vec::new()),
        };
        let record = crate::trail::Record::new(
            event,
            shared,
            dropped,
            trace,
            deliveries,
            &invalid,
            &self.trail_secrets,
            &self.disabled_tools,
        );
        self.metrics.event_recorded(&record);
        self.metrics.trail.push(record);
    }

    /// The client script with this config's settings in front of it.
    pub fn client_script(loaded: &Loaded, triggers: &Triggers) -> Asset {
        let s = &loaded.config.settings;
        let config = json!({
            "triggers": triggers.client_config(),
            "prefix": loaded.config.server.prefix.0,
            "auto_pageview": s.auto_pageview,
            "spa": s.spa,
            "data_layer": s.data_layer,
            "ecommerce": s.ecommerce,
            "consent": consent_client_config(&loaded.config.consent),
        });
        assets::client_script(&config)
    }
}

/// What the browser's consent API needs: the purposes (with their texts in
/// every language configured) and where the choice is stored. `null` when
/// consent is off.
fn consent_client_config(c: &crate::config::ConsentConfig) -> Value {
    if !c.enabled {
        return Value::Null;
    }
    let purposes: Vec<Value> = c
        .purposes
        .iter()
        .map(|p| {
            let p = p.get_ref();
            json!({
                "id": p.id,
                "name": p.name,
                "description": p.description,
                "default": p.default,
            })
        })
        .collect();
    json!({
        "cookie": c.cookie,
        "show_modal": c.show_modal,
        "tcf": c.tcf,
        "purposes": purposes,
        "texts": crate::consent::modal_texts(c),
    })
}

impl PrefixHandler for App {
    fn handle<'a>(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<futures_util::future::BoxFuture<'a, Response<ProxyBody>>, Request<Incoming>> {
        if req.uri().path() == self.collector_path {
            return Ok(Box::pin(async move {
                crate::collector::handle(&self, req, peer).await
            }));
        }
        if let Some(rest) = req.uri().path().strip_prefix(self.debug_path.as_str()) {
            if rest.is_empty() || rest == "/" || rest == "/events" {
                let resp = crate::debugger::handle(&self, &req, rest == "/events");
                return Ok(Box::pin(async move { resp }));
            }
        }
        if req.uri().path() == self.events_api_path {
            return Ok(Box::pin(async move {
                crate::collector::events_api::handle(&self, req, peer).await
            }));
        }
        Err(req)
    }
}
