//! Triggers (SPEC §7): a trigger fires for an event when all its match rules
//! match and none of its `exclude` rules does. Client-side rules (click,
//! form submit, timer, scroll depth, element visible) run in the browser,
//! which then sends a track event named after the trigger; on the server such
//! a trigger fires for that event.
//!
//! Everything is compiled at config load: templates parsed, regexes built
//! (size-limited), literal numbers parsed, so evaluating a rule is a render
//! and a comparison.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::template::{Context, Template};
use crate::event::Event;

/// Compiled regexes may not grow past this (untrusted config is still
/// config, but a typo should not eat memory).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The 14 comparison operators, case-sensitive like Zaraz's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Equals,
    NotEquals,
    Contains,
    NotContains,
    StartsWith,
    NotStartsWith,
    EndsWith,
    NotEndsWith,
    MatchesRegex,
    NotMatchesRegex,
    GreaterThan,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
}

impl Op {
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            Op::GreaterThan | Op::GreaterThanOrEqual | Op::LessThan | Op::LessThanOrEqual
        )
    }
}

/// The right-hand side of a match rule, prepared for its operator.
#[derive(Debug, Clone)]
enum Operand {
    Text(String),
    Number(f64),
    Regex(regex::Regex),
}

/// `{ match = "{{ … }}", op = "…", value = "…" }`.
#[derive(Debug, Clone)]
pub struct MatchRule {
    pub template: Template,
    pub op: Op,
    operand: Operand,
}

impl MatchRule {
    /// Compiles a rule; errors say what is wrong with it.
    pub fn new(template: &str, op: Op, value: &Value) -> Result<MatchRule, String> {
        let template = Template::parse(template)?;
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => return Err(format!("value must be a string or a number, not {other}")),
        };
        let operand = match op {
            Op::MatchesRegex | Op::NotMatchesRegex => regex::RegexBuilder::new(&text)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map(Operand::Regex)
                .map_err(|e| {
                    // The regex crate's message spans lines; keep its last.
                    let e = e.to_string();
                    let why = e
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim_start_matches("error: ")
                        .to_string();
                    format!("invalid regex {text:?}: {why}")
                })?,
            op if op.is_numeric() => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Operand::Number)
                .ok_or_else(|| {
                    format!(
                        "`{}` compares numbers, but value {text:?} is not a number",
                        op_name(op)
                    )
                })?,
            _ => Operand::Text(text),
        };
        Ok(MatchRule {
            template,
            op,
            operand,
        })
    }

    /// Whether the rule holds for the rendered left-hand side.
    pub fn test(&self, left: &str) -> bool {
        match (&self.operand, self.op) {
            (Operand::Text(v), Op::Equals) => left == v,
            (Operand::Text(v), Op::NotEquals) => left != v,
            (Operand::Text(v), Op::Contains) => left.contains(v.as_str()),
            (Operand::Text(v), Op::NotContains) => !left.contains(v.as_str()),
            (Operand::Text(v), Op::StartsWith) => left.starts_with(v.as_str()),
            (Operand::Text(v), Op::NotStartsWith) => !left.starts_with(v.as_str()),
            (Operand::Text(v), Op::EndsWith) => left.ends_with(v.as_str()),
            (Operand::Text(v), Op::NotEndsWith) => !left.ends_with(v.as_str()),
            (Operand::Regex(r), Op::MatchesRegex) => r.is_match(left),
            (Operand::Regex(r), Op::NotMatchesRegex) => !r.is_match(left),
            (Operand::Number(v), op) => match left.trim().parse::<f64>() {
                // A missing or non-numeric value never compares.
                Ok(l) if l.is_finite() && !left.trim().is_empty() => match op {
                    Op::GreaterThan => l > *v,
                    Op::GreaterThanOrEqual => l >= *v,
                    Op::LessThan => l < *v,
                    Op::LessThanOrEqual => l <= *v,
                    _ => false,
                },
                _ => false,
            },
            _ => false,
        }
    }

    pub fn matches(&self, ctx: &Context<'_>) -> bool {
        self.test(&self.template.render(ctx))
    }

    /// The literal value, for the browser script's copy of page rules.
    pub fn value_text(&self) -> String {
        match &self.operand {
            Operand::Text(t) => t.clone(),
            Operand::Number(n) => n.to_string(),
            Operand::Regex(r) => r.as_str().to_string(),
        }
    }
}

pub fn op_name(op: Op) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A rule the browser runs; the trigger's id names the event it sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientRule {
    Click {
        #[serde(skip_serializing_if = "Option::is_none")]
        css: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        xpath: Option<String>,
        wait_ms: u64,
    },
    FormSubmit {
        css: String,
        validate: bool,
    },
    Timer {
        interval_ms: u64,
        limit: u64,
    },
    ScrollDepth {
        /// Each threshold: `"45%"` or `"100px"`.
        depths: Vec<String>,
    },
    ElementVisible {
        css: String,
    },
}

/// A compiled trigger.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub id: String,
    pub rules: Vec<MatchRule>,
    pub exclude: Vec<MatchRule>,
    /// Set when the trigger fires from the browser.
    pub client: Option<ClientRule>,
}

impl Trigger {
    /// Whether the trigger fires for `event`.
    pub fn fires(&self, event: &Event, ctx: &Context<'_>) -> bool {
        if self.client.is_some() && event.name != self.id {
            return false;
        }
        self.rules.iter().all(|r| r.matches(ctx)) && !self.exclude.iter().any(|r| r.matches(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::super::template::Variables;
    use super::*;
    use serde_json::json;

    fn rule(op: Op, value: Value) -> MatchRule {
        MatchRule::new("{{ client.x }}", op, &value).unwrap()
    }

    /// Every operator, true and false, strings and numbers, missing values.
    #[test]
    fn operator_table() {
        use Op::*;
        let cases: Vec<(Op, Value, &str, bool)> = vec![
            (Equals, json!("purchase"), "purchase", true),
            (Equals, json!("purchase"), "Purchase", false),
            (Equals, json!(""), "", true),
            (Equals, json!(5), "5", true),
            (NotEquals, json!("a"), "b", true),
            (NotEquals, json!("a"), "a", false),
            (NotEquals, json!("a"), "", true),
            (
                Contains,
                json!("/internal"),
                "https://s.test/internal/x",
                true,
            ),
            (Contains, json!("/internal"), "https://s.test/x", false),
            (Contains, json!("x"), "", false),
            (NotContains, json!("bot"), "Chrome", true),
            (NotContains, json!("bot"), "Googlebot", false),
            (StartsWith, json!("/shop"), "/shop/cart", true),
            (StartsWith, json!("/shop"), "/Shop/cart", false),
            (NotStartsWith, json!("/admin"), "/shop", true),
            (NotStartsWith, json!("/admin"), "/admin/x", false),
            (EndsWith, json!(".pdf"), "/a/b.pdf", true),
            (EndsWith, json!(".pdf"), "/a/b.PDF", false),
            (NotEndsWith, json!(".pdf"), "/a/b.html", true),
            (NotEndsWith, json!(".pdf"), "/a/b.pdf", false),
            (MatchesRegex, json!("^/p/[0-9]+$"), "/p/42", true),
            (MatchesRegex, json!("^/p/[0-9]+$"), "/p/x", false),
            (MatchesRegex, json!("^$"), "", true),
            (NotMatchesRegex, json!("^/p/"), "/q/1", true),
            (NotMatchesRegex, json!("^/p/"), "/p/1", false),
            (GreaterThan, json!(100), "150.5", true),
            (GreaterThan, json!(100), "100", false),
            (GreaterThan, json!("100"), "99", false),
            (GreaterThan, json!(100), "", false),
            (GreaterThan, json!(100), "abc", false),
            (GreaterThanOrEqual, json!(100), "100", true),
            (GreaterThanOrEqual, json!(100), "99.99", false),
            (LessThan, json!(10), "9", true),
            (LessThan, json!(10), "10", false),
            (LessThan, json!(10), "", false),
            (LessThanOrEqual, json!(-1), "-1", true),
            (LessThanOrEqual, json!(-1), "0", false),
        ];
        for (op, value, left, want) in cases {
            assert_eq!(
                rule(op, value.clone()).test(left),
                want,
                "{op:?} {value} on {left:?}"
            );
        }
    }

    #[test]
    fn numeric_comparison_is_numeric_not_lexical() {
        assert!(rule(Op::GreaterThan, json!(9)).test("10"));
        assert!(!rule(Op::LessThan, json!(9)).test("10"));
    }

    #[test]
    fn bad_rules_are_errors() {
        assert!(
            MatchRule::new("{{ client.x }}", Op::MatchesRegex, &json!("("))
                .unwrap_err()
                .contains("invalid regex")
        );
        assert!(
            MatchRule::new("{{ client.x }}", Op::GreaterThan, &json!("abc"))
                .unwrap_err()
                .contains("not a number")
        );
        assert!(MatchRule::new("{{ nope.x }}", Op::Equals, &json!("a")).is_err());
        assert!(MatchRule::new("{{ client.x }}", Op::Equals, &json!([1])).is_err());
        assert!(
            MatchRule::new("{{ client.x }}", Op::MatchesRegex, &json!("a{1000}{1000}")).is_err()
        );
    }

    /// A value that parses as infinity (`"inf"`, `"infinity"`) is not a
    /// number to compare: an operator typing `inf` in a form must not pass
    /// every `greater_than`.
    #[test]
    fn infinite_values_never_compare() {
        for left in ["inf", "-inf", "infinity", "NaN"] {
            assert!(!rule(Op::GreaterThan, json!(5)).test(left), "{left}");
            assert!(!rule(Op::LessThan, json!(5)).test(left), "{left}");
        }
    }

    fn event_named(name: &str) -> Event {
        let input = crate::event::EventInput {
            kind: Some(crate::event::Kind::Track),
            name: name.into(),
            ..Default::default()
        };
        let info = crate::event::RequestInfo {
            ip: None,
            user_agent: crate::event::ua::UaParser::default().parse(""),
            cookies: Default::default(),
            location: Default::default(),
        };
        let mut tracker = crate::event::identity::Tracker::from_cookie_header_ms("", 1_000_000);
        Event::build(input, &info, tracker.next(false), 1_000_000)
    }

    /// A trigger fires when every match rule holds and no exclusion does;
    /// a browser-side trigger only for the event the browser sends under
    /// its id.
    #[test]
    fn a_trigger_needs_all_its_rules_and_no_exclusion() {
        let variables = Variables::new();
        let client = json!({"x": "a"});
        let system = json!({});
        let ctx = Context {
            client: &client,
            system: &system,
            variables: &variables,
        };
        let hit = rule(Op::Equals, json!("a"));
        let miss = rule(Op::Equals, json!("b"));
        let trigger =
            |rules: Vec<MatchRule>, exclude: Vec<MatchRule>, client: Option<ClientRule>| Trigger {
                id: "t1".into(),
                rules,
                exclude,
                client,
            };
        let other = event_named("other");
        assert!(trigger(vec![hit.clone()], vec![], None).fires(&other, &ctx));
        assert!(trigger(vec![hit.clone()], vec![miss.clone()], None).fires(&other, &ctx));
        assert!(!trigger(vec![hit.clone(), miss.clone()], vec![], None).fires(&other, &ctx));
        assert!(!trigger(vec![hit.clone()], vec![hit.clone()], None).fires(&other, &ctx));

        let timer = Some(ClientRule::Timer {
            interval_ms: 1000,
            limit: 1,
        });
        let own = event_named("t1");
        assert!(!trigger(vec![hit.clone()], vec![], timer.clone()).fires(&other, &ctx));
        assert!(trigger(vec![hit], vec![], timer.clone()).fires(&own, &ctx));
        assert!(!trigger(vec![miss], vec![], timer).fires(&own, &ctx));
    }
}
