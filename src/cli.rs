//! The command line (SPEC §1). Exit codes: 0 ok, 1 invalid config or input,
//! 2 usage.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::Plan;
use crate::config::{self, Loaded};
use crate::logging::{self, LogFormat};
use crate::rules::Secrets;
use crate::server::{self, Bound};

#[derive(Parser)]
#[command(
    name = "tagproxy",
    version,
    about = "Self-hosted, Zaraz-compatible tag manager edge proxy"
)]
struct Cli {
    /// Config file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        env = "TAGPROXY_CONFIG",
        default_value = "tagproxy.toml"
    )]
    config: PathBuf,
    /// Log format; default: text on a terminal, JSON lines otherwise.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy from the config file.
    Serve,
    /// Run the bundled demo shop behind the proxy; needs no file and no network.
    Demo {
        /// Where the proxied shop listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Validate the config file and every tool file.
    Check,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    logging::init(cli.log_format);
    match cli.command {
        Command::Check => check(&cli.config),
        Command::Serve => match load(&cli.config) {
            Some(loaded) => match load_plan(&loaded, Secrets::Required) {
                Some(plan) => serve(loaded, plan),
                None => ExitCode::from(1),
            },
            None => ExitCode::from(1),
        },
        Command::Demo { listen } => demo(listen),
    }
}

fn load(path: &Path) -> Option<Loaded> {
    match config::load(path) {
        Ok(loaded) => Some(loaded),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// Loads the config and every tool file, or prints why not.
fn load_plan(loaded: &Loaded, secrets: Secrets) -> Option<Plan> {
    match Plan::load(loaded, secrets) {
        Ok(plan) => Some(plan),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

fn check(path: &Path) -> ExitCode {
    let Some(loaded) = load(path) else {
        return ExitCode::from(1);
    };
    // A config is checked where its secrets may not be (CI, an editor).
    let Some(plan) = load_plan(&loaded, Secrets::Optional) else {
        return ExitCode::from(1);
    };
    for w in loaded.warnings.iter().chain(&plan.warnings) {
        eprintln!("warning: {w}");
    }
    let triggers = plan.triggers.list.len();
    println!("ok: {} tools, {triggers} triggers", plan.tools.len());
    ExitCode::SUCCESS
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn serve(loaded: Loaded, plan: Plan) -> ExitCode {
    let rt = runtime();
    rt.block_on(async {
        let server = &loaded.config.server;
        let bound = match Bound::bind(server.listen.0, server.admin_listen.0).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: {e}", loaded.path.display());
                return ExitCode::from(1);
            }
        };
        match server::run(&loaded, plan, bound, true).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        }
    })
}

fn demo(listen: SocketAddr) -> ExitCode {
    let rt = runtime();
    rt.block_on(async {
        let origin = match crate::demo::start_origin().await {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("cannot start the demo origin: {e}");
                return ExitCode::from(1);
            }
        };
        let text = format!(
            "[server]\nlisten = \"{listen}\"\nupstream = \"http://{origin}\"\nadmin_listen = \"127.0.0.1:0\"\n[delivery]\nbackend = \"memory\"\n"
        );
        let loaded = config::parse(Path::new("<demo>"), &text).expect("demo config is valid");
        let console = "type = \"console\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n";
        let tool = crate::tools::from_text("console", Path::new("<demo>/tools/console.toml"), console, &Default::default(), &Default::default())
            .expect("demo tool is valid")
            .expect("enabled");
        let plan = Plan { tools: vec![tool], variables: Default::default(), triggers: Default::default(), warnings: Vec::new() };
        let bound = match Bound::bind(listen, loaded.config.server.admin_listen.0).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{e} (try --listen 127.0.0.1:8081)");
                return ExitCode::from(1);
            }
        };
        let url = format!("http://{}", bound.public.local_addr().expect("bound"));
        println!("tagproxy demo shop is running.");
        println!("  shop (proxied, script injected):  {url}/");
        println!("  product page:                     {url}/product/mug");
        println!("  cart / checkout:                  {url}/cart  {url}/checkout");
        println!("  SPA route (history pageviews):    {url}/app");
        println!("  client script:                    {url}/_tagproxy/s.js");
        println!("  admin health:                     http://{}/healthz", bound.admin.local_addr().expect("bound"));
        println!("Every event the shop sends is printed below by the `console` tool.");
        println!("Press Ctrl-C to stop.");
        match server::run(&loaded, plan, bound, false).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        }
    })
}
