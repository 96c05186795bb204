//! Rules: templates, variables, and which tools an event goes to.
//!
//! Today that is automated actions (SPEC §7: per tool, pageview / track /
//! ecommerce); triggers and custom actions come with the triggers issue.

pub mod template;

use serde_json::Value;

use crate::config::{Loaded, Problem, VariableConfig};
use crate::event::Event;
use crate::tools::{BuildContext, Delivery, Tool};
use template::{Variable, Variables};

/// Prefix of the environment variables secrets are read from.
pub const SECRET_ENV_PREFIX: &str = "TAGPROXY_SECRET_";

/// `[variables]`, with secrets read from the environment.
pub fn variables(loaded: &Loaded) -> Result<Variables, Vec<Problem>> {
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
                        problems.push(Problem::at(
                            &loaded.path,
                            &loaded.text,
                            at,
                            format!("secret `{name}`: environment variable {env} is not set"),
                        ));
                        continue;
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
    if problems.is_empty() {
        Ok(vars)
    } else {
        Err(problems)
    }
}

/// Deliveries and browser instructions for `event` from the automated
/// actions of every tool that asked for its kind.
pub fn automated(
    event: &Event,
    tools: &[Tool],
    variables: &Variables,
) -> (Vec<Delivery>, Vec<Value>) {
    let mut deliveries = Vec::new();
    let mut instructions = Vec::new();
    for tool in tools {
        if !tool.file.automated().covers(event.kind) {
            continue;
        }
        let cx = BuildContext {
            tool_id: &tool.id,
            variables,
        };
        let out = tool.adapter.automated(event, &cx);
        deliveries.extend(out.payloads.into_iter().map(|payload| Delivery {
            tool: tool.id.clone(),
            event_id: event.id.clone(),
            payload,
        }));
        instructions.extend(out.instructions);
    }
    (deliveries, instructions)
}
