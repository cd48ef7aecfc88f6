//! The `ringway` command: parse arguments, then hand over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use ringway::cli::Remote;
use ringway::config::Config;
use ringway::control::Instance;

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
enum ClusterAction {
    /// Show this instance's view: role, term, leader, members.
    Status,
    /// Add a member: it must be running with `cluster.join: true`. Answers once it is
    /// a voter.
    AddNode {
        /// Its node.id.
        name: String,
        /// Its cluster.address, as the other members reach it.
        peer_address: SocketAddr,
    },
    /// Remove a member from the Raft group.
    RemoveNode { name: String },
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
    /// Print which upstream each key maps to: KEY<TAB>UPSTREAM_ID. From the file's
    /// pools, or with --live from the running instance (the cluster's state).
    Route {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The pool whose ring to use (needed when the file has several).
        #[arg(long)]
        pool: Option<String>,
        /// Ask the running instance's admin API (the file's admin.address, or --admin).
        #[arg(long)]
        live: bool,
        /// Admin API address for --live (default: the file's admin.address).
        #[arg(long)]
        admin: Option<SocketAddr>,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Inspect or change the cluster through a running instance's admin API.
    Cluster {
        /// Config file whose admin.address and admin.token_file to use.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Admin API address (overrides the file's).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// File holding the admin bearer token (overrides the file's).
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        action: ClusterAction,
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
        Command::Route {
            config,
            pool,
            live,
            admin,
            keys,
        } => route(config.as_deref(), pool.as_deref(), live, admin, &keys),
        Command::Cluster {
            config,
            admin,
            token_file,
            action,
        } => cluster(config.as_deref(), admin, token_file.as_deref(), action),
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

/// Loads the config, then reads every TLS file it names: both kinds of error are
/// reported the same way, each at its field.
fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    ringway::control::load_file(path)
        .map(|(config, _)| config)
        .map_err(fail)
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

fn route(
    path: Option<&std::path::Path>,
    pool: Option<&str>,
    live: bool,
    admin: Option<SocketAddr>,
    keys: &[String],
) -> ExitCode {
    let config = match path.map(load).transpose() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let lines = if live || admin.is_some() {
        Remote::from_args(config.as_ref(), admin, None).and_then(|remote| {
            let pool = ringway::cli::live_pool(config.as_ref(), pool)?;
            runtime(Some(1))?.block_on(remote.route(&pool, keys))
        })
    } else {
        match &config {
            Some(c) => ringway::cli::route(c, pool, keys),
            None => Err("give --config FILE (or --live with --admin ADDR)".into()),
        }
    };
    match lines {
        Ok(lines) => {
            print!("{lines}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn cluster(
    path: Option<&std::path::Path>,
    admin: Option<SocketAddr>,
    token_file: Option<&std::path::Path>,
    action: ClusterAction,
) -> ExitCode {
    let config = match path.map(load).transpose() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let answer = Remote::from_args(config.as_ref(), admin, token_file).and_then(|remote| {
        runtime(Some(1))?.block_on(async {
            match action {
                ClusterAction::Status => remote.status().await,
                ClusterAction::AddNode { name, peer_address } => {
                    remote.add_node(&name, &peer_address.to_string()).await
                }
                ClusterAction::RemoveNode { name } => remote.remove_node(&name).await,
            }
        })
    });
    match answer {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn run(path: &std::path::Path, threads: Option<usize>) -> ExitCode {
    let (config, text) = match ringway::control::load_file(path) {
        Ok(loaded) => loaded,
        Err(e) => return fail(e),
    };
    let rt = match runtime(threads) {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    match rt.block_on(serve(path, config, text)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

async fn serve(path: &std::path::Path, config: Config, text: Vec<u8>) -> Result<(), String> {
    let mut instance = Instance::start(path, config, text).await?;
    ringway::admin::Admin::start(&instance).await?;
    instance.bind().await?;
    instance.serve(ringway::shutdown::signal()).await
}
