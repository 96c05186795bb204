//! tagproxy: a self-hosted, Zaraz-compatible tag manager edge proxy.
//!
//! Data flow: [`proxy`] (forwarding, injection) → [`collector`] (wire format)
//! → [`event`] (model, system properties) → consent / bots → [`rules`]
//! (templates, actions) → [`tools`] (adapters) → [`delivery`] (queue,
//! retry); [`config`] and [`admin`] at the side, [`app`] ties one config's
//! pieces together. Consent and bots arrive with their issue.

pub mod admin;
pub mod app;
pub mod bots;
pub mod cli;
pub mod collector;
pub mod config;
pub mod consent;
pub mod debugger;
pub mod delivery;
pub mod demo;
pub mod event;
pub mod import_zaraz;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod rules;
pub mod schema;
pub mod server;
pub mod tls;
pub mod tools;
pub mod trail;
