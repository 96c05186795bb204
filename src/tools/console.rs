//! `console`: one line per event on stdout. The demo uses it; operators use it
//! to see what tools would receive.

use serde_json::json;

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
            payloads: vec![Payload::Stdout(format!("[{}] {line}", cx.tool_id))],
            instructions: Vec::new(),
        }
    }
}
