//! The running application: config turned into tools, variables, a delivery
//! dispatcher and the routes under `prefix`. Built once per config.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::config::{ConfigError, Loaded, LocationHeaders, Settings, TrustedProxies};
use crate::delivery::Dispatcher;
use crate::event::privacy::Privacy;
use crate::event::ua::UaParser;
use crate::event::Event;
use crate::proxy::assets::{self, Asset};
use crate::proxy::body::ProxyBody;
use crate::proxy::PrefixHandler;
use crate::rules::template::Variables;
use crate::rules::Triggers;
use crate::tools::{self, Delivery, Tool};

/// What `check` validates and `serve` runs: everything but the runtime parts.
pub struct Plan {
    pub tools: Vec<Tool>,
    pub variables: Variables,
    pub triggers: Triggers,
}

impl Plan {
    /// Loads variables and every tool file; collects every problem.
    pub fn load(loaded: &Loaded) -> Result<Plan, ConfigError> {
        let mut problems = Vec::new();
        let variables = crate::rules::variables(loaded).unwrap_or_else(|mut p| {
            problems.append(&mut p);
            Variables::new()
        });
        let (triggers, mut trigger_problems) = crate::rules::triggers(loaded, &variables);
        problems.append(&mut trigger_problems);
        let tools =
            tools::load_dir(&loaded.tools_dir(), &variables, &triggers).unwrap_or_else(|mut p| {
                problems.append(&mut p);
                Vec::new()
            });
        if problems.is_empty() {
            Ok(Plan {
                tools,
                variables,
                triggers,
            })
        } else {
            Err(ConfigError(problems))
        }
    }
}

pub struct App {
    pub settings: Settings,
    pub tools: Vec<Tool>,
    pub variables: Variables,
    pub triggers: Triggers,
    pub dispatcher: Dispatcher,
    pub ua: UaParser,
    pub trusted: TrustedProxies,
    pub location: LocationHeaders,
    pub max_event_bytes: u64,
    pub privacy: Privacy,
    collector_path: String,
}

impl App {
    /// Starts the delivery workers; needs a Tokio runtime.
    pub fn start(loaded: &Loaded, plan: Plan) -> App {
        let config = &loaded.config;
        let ids: Vec<String> = plan.tools.iter().map(|t| t.id.clone()).collect();
        App {
            settings: config.settings.clone(),
            dispatcher: Dispatcher::start(&ids, &config.delivery),
            tools: plan.tools,
            variables: plan.variables,
            triggers: plan.triggers,
            ua: UaParser::default(),
            trusted: config.server.trusted_proxies.clone(),
            location: config.location.clone(),
            max_event_bytes: config.server.max_event_bytes,
            privacy: Privacy::from(&config.settings),
            collector_path: format!("{}/t", config.server.prefix.0),
        }
    }

    /// Deliveries and browser instructions for one event.
    pub fn fan_out(&self, event: &Event) -> (Vec<Delivery>, Vec<Value>) {
        crate::rules::fan_out(event, &self.tools, &self.triggers, &self.variables)
    }

    /// Records a processed event (the debugger and admin stream hook in here).
    pub fn observe(&self, event: &Event) {
        tracing::debug!(event_id = %event.id, kind = ?event.kind, name = %event.name, "event");
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
        });
        assets::client_script(&config)
    }
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
        Err(req)
    }
}
