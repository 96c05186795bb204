//! tagproxy: a self-hosted, Zaraz-compatible tag manager edge proxy.
//!
//! Data flow: [`proxy`] (forwarding, injection) → collector → event →
//! consent / bots → rules → tools → delivery; [`config`] and [`admin`] at the
//! side. Modules for the later steps arrive with their issues.

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod logging;
pub mod proxy;
pub mod server;
