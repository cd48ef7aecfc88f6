//! The `ringway` command: parse arguments, then hand over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use ringway::admin::Admin;
use ringway::cluster::node::Member;
use ringway::config::Config;
use ringway::proxy::server::Server;
use ringway::proxy::{Proxy, Snapshot};

#[derive(Parser)]
#[command(
    name = "ringway",
    version,
    about = "A consistent-hashing HTTP load balancer"
)]
struct Cli {
    /// Log line format; levels come from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Worker threads (default: one per CPU). 1 runs everything on one thread.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Validate a config file and summarise it.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print which upstream each key maps to: KEY<TAB>UPSTREAM_ID.
    Route {
        #[arg(long, short)]
        config: PathBuf,
        /// The pool whose ring to use (needed when the file has several).
        #[arg(long)]
        pool: Option<String>,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Run a tiny upstream that answers with its own name (for demos and tests).
    Echo {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run { config, threads } => run(&config, threads),
        Command::Check { config } => check(&config),
        Command::Route { config, pool, keys } => route(&config, pool.as_deref(), &keys),
        Command::Echo { listen, name } => runtime(Some(1))
            .and_then(|rt| {
                rt.block_on(ringway::echo::run(listen, name))
                    .map_err(|e| e.to_string())
            })
            .map_or_else(fail, |_| ExitCode::SUCCESS),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("ringway: {message}");
    ExitCode::from(2)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let mut b = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("ringway: {e}");
        ExitCode::from(2)
    })
}

fn check(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            println!("{}: valid", path.display());
            print!("{}", ringway::cli::summary(&config));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn route(path: &std::path::Path, pool: Option<&str>, keys: &[String]) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match ringway::cli::route(&config, pool, keys) {
        Ok(lines) => {
            print!("{lines}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn run(path: &std::path::Path, threads: Option<usize>) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime(threads) {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    match rt.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// The admin bearer token: the file's first line, which must not be empty.
fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("admin.token_file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(format!(
            "admin.token_file {}: the token is empty",
            path.display()
        ));
    }
    Ok(token)
}

async fn serve(config: Config) -> Result<(), String> {
    let token = match config.admin.as_ref().and_then(|a| a.token_file.as_ref()) {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let config = Arc::new(config);
    let proxy = Arc::new(Proxy::new(Snapshot::build(&config, None)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let member = Member::start(&config, stop_rx.clone()).map_err(|e| e.to_string())?;
    proxy.metrics().register_cluster(&member);
    proxy.metrics().config_loaded();
    tokio::spawn(ringway::proxy::snapshot::follow_cluster(
        member.handle.clone(),
        config.clone(),
        proxy.clone(),
    ));
    if let Some(admin) = &config.admin {
        let listener = Admin::bind(admin.address)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(addr = %admin.address, "admin API listening");
        let admin = Arc::new(Admin {
            config: config.clone(),
            proxy: proxy.clone(),
            cluster: member.handle.clone(),
            names: member.names.clone(),
            token,
        });
        tokio::spawn(admin.serve(listener, stop_rx.clone()));
    }
    let addrs: Vec<SocketAddr> = config.listeners.iter().map(|l| l.address).collect();
    let server = Server::bind(&addrs, proxy, config.limits.clone())
        .await
        .map_err(|e| e.to_string())?;
    for addr in server.local_addrs() {
        tracing::info!(%addr, pools = config.pools.len(), "ringway listening");
    }
    let stop = async move {
        ringway::shutdown::signal().await;
        // The cluster member hands leadership over while the listeners drain.
        let _ = stop_tx.send(true);
    };
    server.run(stop).await;
    tokio::task::spawn_blocking(move || member.join())
        .await
        .map_err(|e| e.to_string())
}
