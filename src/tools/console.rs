//! `console`: one line per event on stdout. The demo uses it; operators use it
//! to see what tools would receive.

use serde_json::{json, Map, Value};

use super::{Adapter, Automated, BuildContext, Output, Payload};
use crate::event::Event;

pub struct Console;

impl Adapter for Console {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        let line = json!({
            "tool": cx.tool_id,
            "type": event.kind,
            "event": event.name,
            "id": event.id,
            "url": event.page_url(),
            "properties": event.client,
        });
        Output {
            payloads: vec![Payload::Stdout(stdout_line(cx.tool_id, &line))],
            ..Default::default()
        }
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("log", &[])]
    }

    fn custom(
        &self,
        kind: &str,
        fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let line = json!({
            "tool": cx.tool_id,
            "action": kind,
            "event": event.name,
            "id": event.id,
            "fields": fields,
        });
        Output {
            payloads: vec![Payload::Stdout(stdout_line(cx.tool_id, &line))],
            ..Default::default()
        }
    }
}

/// `[tool] {json}`, with the characters a terminal would act on escaped:
/// the line holds what visitors sent and lands on an operator's terminal.
fn stdout_line(tool: &str, line: &Value) -> String {
    format!(
        "[{tool}] {}",
        crate::logging::json_for_terminal(&line.to_string())
    )
}
