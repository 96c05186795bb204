//! Rules: templates, variables, triggers, and which tools an event goes to
//! (SPEC §7): per tool, custom actions whose firing triggers fire (and no
//! blocking trigger does), else the automated action for the event's kind.

pub mod template;
pub mod trigger;
pub mod url_template;

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::config::{Loaded, Problem, RuleConfig, ScrollDepthConfig, VariableConfig};
use crate::consent::{Choices, ConsentPolicy};
use crate::event::{Event, Kind};
use crate::tools::guard::{self, Invalid};
use crate::tools::{BuildContext, Delivery, Payload, Source, Tool};
use crate::trail::Trace;
use template::{check_path, Context, Variable, Variables};
use trigger::{ClientRule, MatchRule, Trigger};

/// Prefix of the environment variables secrets are read from.
pub const SECRET_ENV_PREFIX: &str = "TAGPROXY_SECRET_";

/// Whether an unset secret's environment variable is an error (`serve`) or
/// a warning (`check`, which may run where the secrets are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Required,
    Optional,
}

/// `[variables]`, with secrets read from the environment, and the problems
/// found. Every well-named variable is in the map even when it has a
/// problem (an unset secret holds `""`), so the files that use it are not
/// also told it is unknown.
pub fn variables(
    loaded: &Loaded,
    secrets: Secrets,
    warnings: &mut Vec<String>,
) -> (Variables, Vec<Problem>) {
    let mut vars = Variables::new();
    let mut problems = Vec::new();
    for (name, spanned) in &loaded.config.variables {
        let at = spanned.span().start;
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            problems.push(Problem::at(
                &loaded.path,
                &loaded.text,
                at,
                format!("variable name `{name}` may only hold letters, digits and '_'"),
            ));
            continue;
        }
        let var = match spanned.get_ref() {
            VariableConfig::Secret { secret } => {
                let env = format!("{SECRET_ENV_PREFIX}{secret}");
                match std::env::var(&env) {
                    Ok(v) => Variable {
                        value: Value::String(v),
                        secret: true,
                    },
                    Err(_) => {
                        let problem = Problem::at(
                            &loaded.path,
                            &loaded.text,
                            at,
                            format!("secret `{name}`: environment variable {env} is not set"),
                        );
                        match secrets {
                            Secrets::Required => problems.push(problem),
                            Secrets::Optional => warnings.push(problem.to_string()),
                        }
                        Variable {
                            value: Value::String(String::new()),
                            secret: true,
                        }
                    }
                }
            }
            VariableConfig::Plain(v) => Variable {
                value: serde_json::to_value(v).unwrap_or(Value::Null),
                secret: false,
            },
        };
        vars.insert(name.clone(), var);
    }
    (vars, problems)
}

/// A reference to a trigger from an action or a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerRef {
    /// The built-in `Pageview` trigger: every pageview.
    Pageview,
    /// `triggers[i]`.
    Index(usize),
}

/// Name of the built-in trigger of every pageview.
pub const PAGEVIEW_TRIGGER: &str = "Pageview";

/// Every trigger of the config, compiled, with a lookup by id.
#[derive(Debug, Default)]
pub struct Triggers {
    pub list: Vec<Trigger>,
    ids: HashMap<String, usize>,
}

impl Triggers {
    /// Resolves a trigger id as written in a tool file.
    pub fn resolve(&self, id: &str) -> Option<TriggerRef> {
        if id == PAGEVIEW_TRIGGER {
            return Some(TriggerRef::Pageview);
        }
        self.ids.get(id).map(|&i| TriggerRef::Index(i))
    }

    /// The triggers the browser runs, for the client script's config.
    pub fn client_config(&self) -> Value {
        let items: Vec<Value> = self
            .list
            .iter()
            .filter_map(|t| {
                let rule = t.client.as_ref()?;
                // Page-level match rules let the script arm a listener only
                // where it can fire (the server checks every rule again).
                let page_rules: Vec<Value> = t
                    .rules
                    .iter()
                    .filter_map(|r| page_rule(r, false))
                    .chain(t.exclude.iter().filter_map(|r| page_rule(r, true)))
                    .collect();
                let mut v = serde_json::json!({"id": t.id, "rule": rule});
                if !page_rules.is_empty() {
                    v["page"] = Value::Array(page_rules);
                }
                Some(v)
            })
            .collect();
        Value::Array(items)
    }
}

/// A rule the browser can check itself: a single `system.page.*` path.
fn page_rule(rule: &MatchRule, exclude: bool) -> Option<Value> {
    let mut paths = rule.template.paths();
    let path = paths.next()?;
    if paths.next().is_some() || rule.template.as_literal().is_some() {
        return None;
    }
    let literal_only = rule.template.render(&Context {
        client: &Value::Null,
        system: &Value::Null,
        variables: &Variables::new(),
    });
    if !literal_only.is_empty()
        || path.root != template::Root::System
        || path.segments.first().map(String::as_str) != Some("page")
    {
        return None;
    }
    Some(serde_json::json!({
        "path": path.segments.join("."),
        "op": trigger::op_name(rule.op),
        "value": rule.value_text(),
        "exclude": exclude,
    }))
}

/// Compiles `[triggers]`; collects every problem. Every trigger id is known
/// afterwards, even one whose rules failed, so tool files get no cascade of
/// "unknown trigger" errors (a config with problems never runs anyway).
pub fn triggers(loaded: &Loaded, variables: &Variables) -> (Triggers, Vec<Problem>) {
    let mut out = Triggers::default();
    let mut problems = Vec::new();
    for (id, spanned) in &loaded.config.triggers {
        let problem = |at: usize, msg: String| {
            Problem::at(
                &loaded.path,
                &loaded.text,
                at,
                format!("trigger `{id}`: {msg}"),
            )
        };
        if id == PAGEVIEW_TRIGGER
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            problems.push(problem(
                spanned.span().start,
                "ids may only hold letters, digits, '_' and '-', and `Pageview` is built in".into(),
            ));
            continue;
        }
        let cfg = spanned.get_ref();
        let mut trigger = Trigger {
            id: id.clone(),
            rules: Vec::new(),
            exclude: Vec::new(),
            client: None,
        };
        for (list, exclude) in [(&cfg.rules, false), (&cfg.exclude, true)] {
            for rule in list {
                let at = rule.span().start;
                match compile_rule(rule.get_ref(), variables) {
                    Ok(Compiled::Match(m)) if exclude => trigger.exclude.push(m),
                    Ok(Compiled::Match(m)) => trigger.rules.push(m),
                    Ok(Compiled::Client(_)) if exclude => problems.push(problem(
                        at,
                        "client-side rules cannot be exclude rules".into(),
                    )),
                    Ok(Compiled::Client(c)) => {
                        if trigger.client.replace(c).is_some() {
                            problems.push(problem(
                                at,
                                "at most one client-side rule per trigger".into(),
                            ));
                        }
                    }
                    Err(msg) => problems.push(problem(at, msg)),
                }
            }
        }
        out.ids.insert(id.clone(), out.list.len());
        out.list.push(trigger);
    }
    (out, problems)
}

enum Compiled {
    Match(MatchRule),
    Client(ClientRule),
}

fn compile_rule(r: &RuleConfig, variables: &Variables) -> Result<Compiled, String> {
    let client_kinds = [
        r.click.is_some(),
        r.form_submit.is_some(),
        r.timer.is_some(),
        r.scroll_depth.is_some(),
        r.element_visible.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let is_match = r.matches.is_some() || r.op.is_some() || r.value.is_some();
    match (is_match, client_kinds) {
        (true, 0) => {
            let (Some(template), Some(op), Some(value)) = (&r.matches, r.op, &r.value) else {
                return Err("a match rule needs `match`, `op` and `value`".into());
            };
            let value = serde_json::to_value(value).map_err(|e| e.to_string())?;
            let rule = MatchRule::new(template, op, &value)?;
            for p in rule.template.paths() {
                if let Some(problem) = check_path(p, variables) {
                    return Err(problem);
                }
            }
            Ok(Compiled::Match(rule))
        }
        (false, 1) => Ok(Compiled::Client(client_rule(r)?)),
        (false, 0) => Err("empty rule: use `match`/`op`/`value` or one of click, form_submit, timer, scroll_depth, element_visible".into()),
        _ => Err("one rule is either a match rule or one client-side rule".into()),
    }
}

fn client_rule(r: &RuleConfig) -> Result<ClientRule, String> {
    if let Some(c) = &r.click {
        if c.css.is_none() == c.xpath.is_none() {
            return Err("click needs exactly one of `css` or `xpath`".into());
        }
        return Ok(ClientRule::Click {
            css: c.css.clone(),
            xpath: c.xpath.clone(),
            wait_ms: c.wait_ms,
        });
    }
    if let Some(f) = &r.form_submit {
        return Ok(ClientRule::FormSubmit {
            css: f.css.clone(),
            validate: f.validate,
        });
    }
    if let Some(t) = &r.timer {
        return Ok(ClientRule::Timer {
            interval_ms: t.interval_ms,
            limit: t.limit,
        });
    }
    if let Some(d) = &r.scroll_depth {
        let depths = match d {
            ScrollDepthConfig::One(s) => vec![s.clone()],
            ScrollDepthConfig::Many(v) => v.clone(),
        };
        for depth in &depths {
            let ok = depth
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .is_some_and(|n| (0.0..=100.0).contains(&n))
                || depth
                    .strip_suffix("px")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some();
            if !ok {
                return Err(format!(
                    "scroll_depth {depth:?} must look like \"45%\" or \"100px\""
                ));
            }
        }
        if depths.is_empty() {
            return Err("scroll_depth needs at least one depth".into());
        }
        return Ok(ClientRule::ScrollDepth { depths });
    }
    if let Some(v) = &r.element_visible {
        return Ok(ClientRule::ElementVisible { css: v.css.clone() });
    }
    unreachable!("checked by the caller")
}

/// Memoized trigger results for one event: each trigger is evaluated at most
/// once however many actions name it.
struct Fired<'a> {
    triggers: &'a Triggers,
    event: &'a Event,
    ctx: Context<'a>,
    memo: Vec<Option<bool>>,
}

impl Fired<'_> {
    fn fires(&mut self, r: TriggerRef) -> bool {
        match r {
            TriggerRef::Pageview => self.event.kind == Kind::Pageview,
            TriggerRef::Index(i) => *self.memo[i]
                .get_or_insert_with(|| self.triggers.list[i].fires(self.event, &self.ctx)),
        }
    }

    fn any(&mut self, refs: &[TriggerRef]) -> bool {
        refs.iter().any(|r| self.fires(*r))
    }

    /// The id of the first of `refs` that fires, for the trail.
    fn first(&mut self, refs: &[TriggerRef]) -> Option<String> {
        let r = *refs.iter().find(|r| self.fires(**r))?;
        Some(match r {
            TriggerRef::Pageview => PAGEVIEW_TRIGGER.to_string(),
            TriggerRef::Index(i) => self.triggers.list[i].id.clone(),
        })
    }
}

/// What one tool does with one event.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Custom actions that fired, with their rendered fields.
    Custom(Vec<(&'a Action, Map<String, Value>)>),
    /// No custom action fired; the automated action for the event's kind.
    Automated,
    /// The tool's purposes are not all granted: nothing (counted).
    ConsentWithheld,
}

/// The fan-out decision for `event`, per tool (by index). Per tool: nothing
/// when a tool-level blocking trigger fires; else every custom action that
/// fires (and no blocking trigger of it does); else, when none did, the
/// automated action for the event's kind, so one cause never sends a tool
/// the same event twice. Each trigger is evaluated at most once.
pub fn decide<'a>(
    event: &Event,
    tools: &'a [Tool],
    triggers: &Triggers,
    variables: &Variables,
    consent: &ConsentPolicy,
) -> Vec<(usize, Decision<'a>)> {
    decide_traced(event, tools, triggers, variables, consent).0
}

/// [`decide`], with the [`Trace`] the trail shows: which triggers matched
/// and which actions fired or were blocked, by what.
pub fn decide_traced<'a>(
    event: &Event,
    tools: &'a [Tool],
    triggers: &Triggers,
    variables: &Variables,
    consent: &ConsentPolicy,
) -> (Vec<(usize, Decision<'a>)>, Trace) {
    use crate::trail::ActionEntry;
    let mut trace = Trace::default();
    let no_choice = Choices::default();
    let choices = event.consent.as_deref().unwrap_or(&no_choice);
    let mut fired = Fired {
        triggers,
        event,
        ctx: Context {
            client: &event.client,
            system: &event.system,
            variables,
        },
        memo: vec![None; triggers.list.len()],
    };
    let mut decisions = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let f = &tool.file;
        if !consent.allows(choices, &f.purposes, f.tcf_vendor_id, event.consent_replay) {
            decisions.push((i, Decision::ConsentWithheld));
            let by = Some(f.purposes.join(", ")).filter(|p| !p.is_empty());
            trace
                .actions
                .push(ActionEntry::blocked(&tool.id, "*", "consent", by));
            continue;
        }
        if let Some(by) = fired.first(&tool.blocking) {
            trace.actions.push(ActionEntry::blocked(
                &tool.id,
                "*",
                "blocking_trigger",
                Some(by),
            ));
            continue;
        }
        let mut custom = Vec::new();
        for action in &tool.actions {
            if fired.any(&action.firing) {
                match fired.first(&action.blocking) {
                    None => {
                        trace
                            .actions
                            .push(ActionEntry::fired(&tool.id, &action.name));
                        custom.push((action, action.fields(event, &fired.ctx)));
                    }
                    Some(by) => trace.actions.push(ActionEntry::blocked(
                        &tool.id,
                        &action.name,
                        "blocking_trigger",
                        Some(by),
                    )),
                }
            }
        }
        if !custom.is_empty() {
            decisions.push((i, Decision::Custom(custom)));
        } else if tool.file.automated().covers(event.kind) {
            trace
                .actions
                .push(ActionEntry::fired(&tool.id, "automated"));
            decisions.push((i, Decision::Automated));
        }
    }
    if event.kind == Kind::Pageview {
        trace.triggers.push(PAGEVIEW_TRIGGER.to_string());
    }
    for (i, t) in triggers.list.iter().enumerate() {
        if fired.fires(TriggerRef::Index(i)) {
            trace.triggers.push(t.id.clone());
        }
    }
    (decisions, trace)
}

/// What the fan-out of one event produced.
#[derive(Debug, Default)]
pub struct FanOut {
    pub deliveries: Vec<Delivery>,
    /// Requests that can never be sent (a control character in a header
    /// value, a URL that left its tool's destination…): not queued, but
    /// dead-lettered at once with the reason.
    pub invalid: Vec<(Delivery, Invalid)>,
    /// Browser instructions (`{"fetch": …}`).
    pub instructions: Vec<Value>,
    /// Cookies tools keep in the browser, one per name.
    pub cookies: Vec<crate::tools::ToolCookie>,
    /// Tools the event did not reach for want of consent.
    pub consent_withheld: usize,
    /// What was decided, for the trail.
    pub trace: Trace,
    /// The event as its deliveries keep it, once one was built: the trail
    /// shares it instead of copying the event again.
    pub record: Option<crate::event::SharedRecord>,
}

/// Deliveries and browser instructions for `event`: the decision, then each
/// adapter builds its requests, and each request is checked ([`guard`])
/// before it may be queued.
pub fn fan_out(
    event: &Event,
    tools: &[Tool],
    triggers: &Triggers,
    variables: &Variables,
    consent: &ConsentPolicy,
) -> FanOut {
    let mut result = FanOut::default();
    let (decisions, trace) = decide_traced(event, tools, triggers, variables, consent);
    result.trace = trace;
    for (i, decision) in decisions {
        let tool = &tools[i];
        let cx = |action| BuildContext {
            tool_id: &tool.id,
            variables,
            action,
        };
        let outputs: Vec<(Option<&Action>, _)> = match decision {
            Decision::Custom(actions) => actions
                .into_iter()
                .map(|(action, fields)| {
                    let out =
                        tool.adapter
                            .custom(&action.kind, fields, event, &cx(Some(action.index)));
                    (Some(action), out)
                })
                .collect(),
            Decision::Automated => vec![(None, tool.adapter.automated(event, &cx(None)))],
            Decision::ConsentWithheld => {
                result.consent_withheld += 1;
                Vec::new()
            }
        };
        for (action, out) in outputs {
            let credentials = if out.payloads.is_empty() {
                Vec::new()
            } else {
                secrets_of(tool, variables, event, &cx(action.map(|a| a.index)))
            };
            for (part, payload) in out.payloads.into_iter().enumerate() {
                let checked = match &payload {
                    Payload::Http(req) => {
                        guard::check(req, &tool.origins, tool.adapter.max_body_bytes())
                    }
                    Payload::Stdout(_) => Ok(()),
                };
                let record = result
                    .record
                    .get_or_insert_with(|| crate::event::SharedRecord::of(event))
                    .clone();
                let mut delivery = Delivery::new(tool.id.clone(), event.id.clone(), payload);
                delivery.secrets = credentials
                    .iter()
                    .filter(|s| delivery.payload.contains(s))
                    .cloned()
                    .collect();
                delivery.source = Some(Box::new(Source {
                    event: record,
                    action: action.map(|a| a.index),
                    action_name: action.map(|a| a.name.clone()),
                    part,
                }));
                match checked {
                    Ok(()) => result.deliveries.push(delivery),
                    Err(why) => result.invalid.push((delivery, why)),
                }
            }
            result.instructions.extend(out.instructions);
            crate::tools::merge_cookies(&mut result.cookies, out.cookies);
        }
    }
    result
}

/// The credentials a request of `tool` may carry: its adapter's (Meta's
/// `access_token`) and every secret variable's value. Empty strings are
/// left out (an unset secret under `check`).
fn secrets_of(
    tool: &Tool,
    variables: &Variables,
    event: &Event,
    cx: &BuildContext<'_>,
) -> Vec<String> {
    let mut out: Vec<String> = tool.adapter.credentials(event, cx);
    out.extend(
        variables
            .values()
            .filter(|v| v.secret)
            .map(|v| match &v.value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
    );
    out.retain(|s| !s.is_empty());
    out.sort();
    out.dedup();
    out
}

/// Builds the delivery a dead letter came from again, with the current
/// config: the same action of the same tool for the stored event, without
/// judging triggers or consent again (both were decided when the event
/// arrived). `Err` says why it cannot be built (tool or action gone, the
/// request no longer made, or now refused by [`guard`]).
pub fn rebuild(
    source: &Source,
    tool_id: &str,
    tools: &[Tool],
    variables: &Variables,
) -> Result<Delivery, String> {
    let tool = tools
        .iter()
        .find(|t| t.id == tool_id)
        .ok_or_else(|| format!("tool `{tool_id}` is no longer configured"))?;
    let event: Event = source.event.record()?.clone().into();
    let cx = |action| BuildContext {
        tool_id: &tool.id,
        variables,
        action,
    };
    let (action, out) = match (&source.action, &source.action_name) {
        (None, _) => (None, tool.adapter.automated(&event, &cx(None))),
        (Some(index), name) => {
            // A named action is found by its name only: after an edit its
            // old index may belong to another action, which must not be
            // sent in its place. Only an unnamed one falls back to its index.
            let action = match name {
                Some(n) => tool.actions.iter().find(|a| a.name == *n),
                None => tool.actions.iter().find(|a| a.index == *index),
            }
            .ok_or_else(|| {
                format!(
                    "tool `{tool_id}` no longer has the action `{}`",
                    name.as_deref().unwrap_or("?")
                )
            })?;
            let ctx = Context {
                client: &event.client,
                system: &event.system,
                variables,
            };
            let fields = action.fields(&event, &ctx);
            let out = tool
                .adapter
                .custom(&action.kind, fields, &event, &cx(Some(action.index)));
            (Some(action), out)
        }
    };
    let credentials = secrets_of(tool, variables, &event, &cx(action.map(|a| a.index)));
    let payload =
        out.payloads.into_iter().nth(source.part).ok_or_else(|| {
            format!("tool `{tool_id}` no longer makes this request for the event")
        })?;
    if let Payload::Http(req) = &payload {
        guard::check(req, &tool.origins, tool.adapter.max_body_bytes())
            .map_err(|why| why.to_string())?;
    }
    let mut delivery = Delivery::new(tool.id.clone(), event.id.clone(), payload);
    delivery.secrets = credentials
        .into_iter()
        .filter(|s| delivery.payload.contains(s))
        .collect();
    let mut source = source.clone();
    source.action = action.map(|a| a.index);
    delivery.source = Some(Box::new(source));
    Ok(delivery)
}

/// A custom action (`[[actions]]` of a tool file), compiled.
#[derive(Debug)]
pub struct Action {
    /// Its place in the tool file's `[[actions]]`.
    pub index: usize,
    pub name: String,
    pub kind: String,
    pub firing: Vec<TriggerRef>,
    pub blocking: Vec<TriggerRef>,
    pub include_event_properties: bool,
    pub include_system_properties: bool,
    pub fields: Vec<(String, template::TemplateValue)>,
}

impl Action {
    /// The action's fields rendered for `event`, with the event's and the
    /// system properties added when asked (explicit fields win).
    pub fn fields(&self, event: &Event, ctx: &Context<'_>) -> Map<String, Value> {
        let mut out: Map<String, Value> = self
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.render(ctx)))
            .collect();
        if self.include_event_properties {
            for (k, v) in event.properties() {
                if !k.starts_with("__") {
                    out.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        if self.include_system_properties {
            out.entry("system".to_string())
                .or_insert_with(|| event.system.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn loaded(text: &str) -> Loaded {
        crate::config::parse(std::path::Path::new("tagproxy.toml"), text).unwrap()
    }

    /// Plain values keep their JSON type; a name outside `[A-Za-z0-9_]` is
    /// a problem and left out; an unset secret is a problem for `serve` and
    /// a warning for `check`, and is kept as `""` either way.
    #[test]
    fn variables_read_values_names_and_secrets() {
        let l = loaded(
            "[variables]\nsite = \"shop\"\nrate = 0.5\nok_2 = true\n\"bad-name\" = \"x\"\n\
             key = { secret = \"RULES_TEST_SURELY_UNSET\" }\n",
        );
        let mut warnings = Vec::new();
        let (vars, problems) = variables(&l, Secrets::Required, &mut warnings);
        assert_eq!(vars["site"].value, Value::from("shop"));
        assert_eq!(vars["rate"].value, Value::from(0.5));
        assert_eq!(vars["ok_2"].value, Value::from(true));
        assert!(!vars["site"].secret);
        assert!(!vars.contains_key("bad-name"));
        assert_eq!(vars["key"].value, Value::from(""));
        assert!(vars["key"].secret);
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].contains("variable name `bad-name` may only hold"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("TAGPROXY_SECRET_RULES_TEST_SURELY_UNSET is not set"),
            "{messages:?}"
        );
        assert!(warnings.is_empty());

        let (vars, problems) = variables(&l, Secrets::Optional, &mut warnings);
        assert_eq!(problems.len(), 1, "only the name: {problems:?}");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("is not set"), "{warnings:?}");
        assert_eq!(vars.len(), 4);
    }

    /// Only triggers with a client-side rule go to the browser, each with
    /// the page rules it can check itself (a single `system.page.*` path),
    /// so the script arms listeners only where they can fire.
    #[test]
    fn client_config_lists_browser_triggers_with_their_page_rules() {
        let l = loaded(
            r##"
[triggers.buy_click]
rules = [ { click = { css = "button.buy" } } ]
[triggers.server_only]
rules = [ { match = "{{ client.name }}", op = "equals", value = "buy" } ]
[triggers.checkout_click]
rules = [ { click = { css = "#pay" } }, { match = "{{ system.page.url.pathname }}", op = "equals", value = "/checkout" }, { match = "{{ client.x }}", op = "equals", value = "1" },
  { match = "{{ system.page.url.pathname }}{{ system.page.url.search }}", op = "equals", value = "/a?b" },
  { match = "x{{ system.page.url.pathname }}", op = "equals", value = "x/" },
  { match = "{{ system.device.language }}", op = "equals", value = "de" },
  { match = "{{ $site }}", op = "equals", value = "shop" } ]
exclude = [ { match = "{{ system.page.url.hostname }}", op = "contains", value = "staging" } ]
"##,
        );
        let mut vars = Variables::new();
        vars.insert(
            "site".into(),
            Variable {
                value: Value::from("shop"),
                secret: false,
            },
        );
        let (triggers, problems) = triggers(&l, &vars);
        assert!(problems.is_empty(), "{problems:?}");
        let config = triggers.client_config();
        let ids: Vec<&str> = config
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["buy_click", "checkout_click"]);
        assert!(config[0].get("page").is_none());
        assert_eq!(
            config[1]["page"],
            json!([
                {"path": "page.url.pathname", "op": "equals", "value": "/checkout", "exclude": false},
                {"path": "page.url.hostname", "op": "contains", "value": "staging", "exclude": true},
            ])
        );
        assert_eq!(config[1]["rule"]["click"]["css"], "#pay");
    }

    /// Which trigger configs are refused, and with what: one row each.
    #[test]
    fn triggers_refuse_bad_ids_and_rules() {
        let cases = [
            ("[triggers.Pageview]\nrules = []", "`Pageview` is built in"),
            ("[triggers.\"a b\"]\nrules = []", "ids may only hold"),
            ("[triggers.\"a.b\"]\nrules = []", "ids may only hold"),
            (
                "[triggers.t]\nrules = [ { match = \"{{ client.x }}\", op = \"equals\" } ]",
                "a match rule needs `match`, `op` and `value`",
            ),
            ("[triggers.t]\nrules = [ { } ]", "empty rule"),
            (
                "[triggers.t]\nrules = [ { op = \"equals\" } ]",
                "a match rule needs `match`, `op` and `value`",
            ),
            (
                "[triggers.t]\nrules = [ { value = \"x\" } ]",
                "a match rule needs `match`, `op` and `value`",
            ),
            (
                "[triggers.t]\nrules = [ { click = { css = \"a\" }, timer = { interval_ms = 5 } } ]",
                "either a match rule or one client-side rule",
            ),
            (
                "[triggers.t]\nrules = [ { click = { css = \"a\" }, match = \"{{ client.x }}\" } ]",
                "either a match rule or one client-side rule",
            ),
            (
                "[triggers.t]\nrules = []\nexclude = [ { click = { css = \"a\" } } ]",
                "client-side rules cannot be exclude rules",
            ),
            (
                "[triggers.t]\nrules = [ { click = { css = \"a\" } }, { timer = { interval_ms = 5 } } ]",
                "at most one client-side rule per trigger",
            ),
            (
                "[triggers.t]\nrules = [ { click = { css = \"a\", xpath = \"//a\" } } ]",
                "exactly one of `css` or `xpath`",
            ),
            (
                "[triggers.t]\nrules = [ { click = { } } ]",
                "exactly one of `css` or `xpath`",
            ),
            (
                "[triggers.t]\nrules = [ { scroll_depth = \"120%\" } ]",
                "scroll_depth \"120%\" must look like",
            ),
            (
                "[triggers.t]\nrules = [ { scroll_depth = [\"50%\", \"-5px\"] } ]",
                "scroll_depth \"-5px\" must look like",
            ),
            (
                "[triggers.t]\nrules = [ { scroll_depth = \"half\" } ]",
                "must look like",
            ),
            (
                "[triggers.t]\nrules = [ { scroll_depth = [] } ]",
                "scroll_depth needs at least one depth",
            ),
        ];
        for (text, want) in cases {
            let (_, problems) = triggers(&loaded(text), &Variables::new());
            let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
            assert!(
                messages.len() == 1 && messages[0].contains(want),
                "{text}: {messages:?}"
            );
        }
        // Good ids, with `_` and `-`; each rule lands in its own list.
        let (t, problems) = triggers(
            &loaded(
                "[triggers.a_b-1]\nrules = [ { match = \"{{ client.name }}\", op = \"equals\", value = \"buy\" } ]\n\
                 exclude = [ { match = \"{{ client.test }}\", op = \"equals\", value = \"1\" } ]\n\
                 [triggers.clicks]\nrules = [ { click = { css = \"a\" } } ]\n\
                 [triggers.scrolled]\nrules = [ { scroll_depth = [\"0%\", \" 45.5 %\", \"100%\", \"300px\"] } ]",
            ),
            &Variables::new(),
        );
        assert!(problems.is_empty(), "{problems:?}");
        let a = &t.list[t.ids["a_b-1"]];
        assert_eq!((a.rules.len(), a.exclude.len()), (1, 1));
        assert_eq!(a.rules[0].value_text(), "buy");
        assert_eq!(a.exclude[0].value_text(), "1");
        assert!(a.client.is_none());
        assert!(t.list[t.ids["clicks"]].client.is_some());
        assert!(t.list[t.ids["scrolled"]].client.is_some());
        assert_eq!(
            t.resolve("clicks"),
            Some(TriggerRef::Index(t.ids["clicks"]))
        );
        assert_eq!(t.resolve("Pageview"), Some(TriggerRef::Pageview));
        assert_eq!(t.resolve("nope"), None);
    }

    /// Three tools: two behind a purpose the visitor has not granted, one
    /// with a custom action whose URL carries a secret variable.
    fn fan_out_fixture() -> (Vec<Tool>, Triggers, Variables, ConsentPolicy) {
        let l = loaded(
            r#"
[consent]
enabled = true
[[consent.purposes]]
id = "ads"
name = "Ads"
default = "denied"
[triggers.pro]
rules = [ { match = "{{ client.plan }}", op = "equals", value = "pro" } ]
"#,
        );
        let mut variables = Variables::new();
        for (name, value) in [("token", "s3cr3t-t0ken"), ("unset", "")] {
            variables.insert(
                name.into(),
                template::Variable {
                    value: Value::from(value),
                    secret: true,
                },
            );
        }
        let (triggers, problems) = triggers(&l, &variables);
        assert!(problems.is_empty(), "{problems:?}");
        let withheld = "type = \"http\"\npurposes = [\"ads\"]\n[settings]\nurl = \"http://127.0.0.1:9/ads\"\n[automated]\npageview = true\ntrack = true\n";
        let hook = "type = \"http\"\n[settings]\nurl = \"http://127.0.0.1:9/all\"\n[automated]\npageview = true\n\
                    [[actions]]\nname = \"pro_hook\"\nkind = \"request\"\nfiring = [\"pro\"]\n\
                    [actions.fields]\nurl = \"http://127.0.0.1:9/pro?key={{ $token }}\"\n";
        let tools = [("ads1", withheld), ("ads2", withheld), ("hook", hook)]
            .into_iter()
            .map(|(id, text)| {
                crate::tools::from_text(
                    id,
                    std::path::Path::new("tools"),
                    text,
                    &variables,
                    &triggers,
                )
                .unwrap()
                .unwrap()
            })
            .collect();
        (
            tools,
            triggers,
            variables,
            ConsentPolicy::new(&l.config.consent),
        )
    }

    fn fixture_event(kind: Kind, plan: &str) -> Event {
        let input = crate::event::EventInput {
            kind: Some(kind),
            name: "signup".into(),
            ..Default::default()
        };
        let info = crate::event::RequestInfo {
            ip: None,
            user_agent: crate::event::ua::UaParser::default().parse(""),
            cookies: Default::default(),
            location: Default::default(),
        };
        let mut tracker = crate::event::identity::Tracker::from_cookie_header_ms("", 1_000_000);
        let mut e = Event::build(
            input,
            &info,
            tracker.next(kind == Kind::Pageview),
            1_000_000,
        );
        e.client = json!({ "plan": plan });
        e
    }

    /// Per tool: consent withheld (counted, and named in the trace by the
    /// purposes missing), a custom action that fired instead of the
    /// automated one, and the automated action when none fired.
    #[test]
    fn the_decision_and_its_trace_per_tool() {
        let (tools, triggers, variables, consent) = fan_out_fixture();
        let track = fixture_event(Kind::Track, "pro");
        let decided = decide(&track, &tools, &triggers, &variables, &consent);
        let kinds: Vec<(usize, &str)> = decided
            .iter()
            .map(|(i, d)| {
                let what = match d {
                    Decision::Custom(a) if a.len() == 1 && a[0].0.name == "pro_hook" => "pro_hook",
                    Decision::Custom(_) => "other custom",
                    Decision::Automated => "automated",
                    Decision::ConsentWithheld => "withheld",
                };
                (*i, what)
            })
            .collect();
        assert_eq!(kinds, [(0, "withheld"), (1, "withheld"), (2, "pro_hook")]);

        let (_, trace) = decide_traced(&track, &tools, &triggers, &variables, &consent);
        assert_eq!(trace.triggers, ["pro"], "no Pageview for a track event");
        let blocked = &trace.actions[0];
        assert_eq!(
            (blocked.tool.as_str(), blocked.action.as_str()),
            ("ads1", "*")
        );
        assert_eq!(blocked.blocked.as_deref(), Some("consent"));
        assert_eq!(blocked.by.as_deref(), Some("ads"), "the purposes missing");
        assert!(trace.actions[2].fired);
        assert_eq!(trace.actions[2].action, "pro_hook");

        let pageview = fixture_event(Kind::Pageview, "free");
        let (decided, trace) = decide_traced(&pageview, &tools, &triggers, &variables, &consent);
        assert!(
            matches!(decided[2], (2, Decision::Automated)),
            "{decided:?}"
        );
        assert_eq!(trace.triggers, [PAGEVIEW_TRIGGER]);
    }

    /// The fan-out counts each tool consent kept the event from, and each
    /// delivery names the credentials its request carries (so the trail
    /// and dead letters can hide them): the secret in the URL, never the
    /// unset (empty) one.
    #[test]
    fn fan_out_counts_withheld_tools_and_names_the_secrets_sent() {
        let (tools, triggers, variables, consent) = fan_out_fixture();
        let out = fan_out(
            &fixture_event(Kind::Track, "pro"),
            &tools,
            &triggers,
            &variables,
            &consent,
        );
        assert_eq!(out.consent_withheld, 2);
        assert_eq!(out.deliveries.len(), 1, "{:?}", out.deliveries);
        let d = &out.deliveries[0];
        assert!(d.payload.contains("s3cr3t-t0ken"));
        assert_eq!(d.secrets, ["s3cr3t-t0ken"]);
    }

    /// A dead letter's source without an action name (written before names
    /// were kept) finds its action by index, and only there.
    #[test]
    fn rebuild_falls_back_to_the_action_index_without_a_name() {
        let (tools, triggers, variables, consent) = fan_out_fixture();
        let out = fan_out(
            &fixture_event(Kind::Track, "pro"),
            &tools,
            &triggers,
            &variables,
            &consent,
        );
        let sent = &out.deliveries[0];
        let mut source = (**sent.source.as_ref().unwrap()).clone();
        source.action_name = None;
        let again = rebuild(&source, "hook", &tools, &variables).unwrap();
        assert_eq!(again.payload, sent.payload);
        assert_eq!(again.secrets, ["s3cr3t-t0ken"]);
        source.action = Some(7);
        let err = rebuild(&source, "hook", &tools, &variables).unwrap_err();
        assert!(err.contains("no longer has the action"), "{err}");
    }
}
