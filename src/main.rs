//! The `ringway` command: parse arguments, then hand over to the library.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use ringway::cli::{AdminAddr, Remote, RemoteArgs};
use ringway::config::Config;
use ringway::control::Instance;

const EXAMPLES: &str = "\
Examples:
  ringway check -c /etc/ringway/ringway.yaml
  ringway run -c /etc/ringway/ringway.yaml
  ringway route -c ringway.yaml /users/42 /users/43
  ringway cluster status -c n1.yaml
  ringway completions bash > /usr/share/bash-completion/completions/ringway";

#[derive(Parser)]
#[command(
    name = "ringway",
    version,
    about = "A consistent-hashing HTTP load balancer",
    long_about = "A layer-7 HTTP load-balancing reverse proxy: requests are spread over \
                  upstreams by consistent hashing, and the instances of a cluster agree on \
                  pool membership and ejections through Raft.",
    after_help = EXAMPLES,
    propagate_version = true
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes, before or after its name.
#[derive(Args)]
struct Global {
    /// The config file. `run`, `check` and `config` need it; `route` reads its pools;
    /// `cluster` and `route --live` take the admin address, TLS, token and cluster CA
    /// from it.
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A running instance's admin API for `cluster` and `route --live`: HOST:PORT,
    /// [IPV6]:PORT, or http(s)://HOST[:PORT]. Default: the config file's admin.address,
    /// over HTTPS when the file has admin.tls.
    #[arg(long, global = true, value_name = "ADDR", value_parser = parse_admin)]
    admin: Option<AdminAddr>,
    /// File holding the admin bearer token for changes (default: the config file's
    /// admin.token_file).
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM file of the CA certificates trusted for the admin API's certificate (implies
    /// HTTPS). Default: the config file's cluster.tls.ca_file, else the system's trust
    /// store.
    #[arg(long, global = true, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace) or a filter such as
    /// `warn,ringway=debug`. Beats RUST_LOG, which beats the default, info.
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_filter)]
    log_level: Option<String>,
}

fn parse_admin(s: &str) -> Result<AdminAddr, String> {
    s.parse()
}

/// A level, or a filter of directives. A lone word that is not a level would filter
/// for a module of that name and silence everything else: `warning` is refused.
fn parse_filter(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let lone_word = !s.contains(['=', ',', '[']);
    if lone_word && !LEVELS.contains(&s.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{s:?} is not a level: give one of {} or a filter such as warn,ringway=debug",
            LEVELS.join(", ")
        ));
    }
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("not a log level or filter: {e}"))
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    #[command(after_help = "Example:\n  ringway run -c /etc/ringway/ringway.yaml --threads 4")]
    Run {
        /// Worker threads (default: one per CPU). 1 runs everything on one thread.
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
    },
    /// Validate a config file and summarise it (same as `config check`).
    #[command(after_help = "Example:\n  ringway check -c /etc/ringway/ringway.yaml")]
    Check,
    /// Check a config file or print it with every default filled in.
    #[command(after_help = "Examples:\n  ringway config check -c ringway.yaml\n  \
                            ringway config dump -c ringway.yaml > in-force.yaml")]
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print which upstream each key maps to: KEY<TAB>UPSTREAM_ID. From the file's
    /// pools, or with --live from the running instance (the cluster's state).
    #[command(
        after_help = "Examples:\n  ringway route -c ringway.yaml /users/42 /users/43\n  \
                            ringway route --live -c n1.yaml --pool web /users/42\n  \
                            ringway route --live --admin https://lb1.example:9480 --pool web /users/42"
    )]
    Route {
        /// The pool whose ring to use (needed when the file has several, and with
        /// --live without a file).
        #[arg(long, value_name = "NAME")]
        pool: Option<String>,
        /// Ask the running instance's admin API (the file's admin.address, or --admin).
        #[arg(long)]
        live: bool,
        /// The keys, as the pool's hash_key builds them (with hash_key: path, the path).
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Inspect or change the cluster through a running instance's admin API.
    #[command(after_help = "Examples:\n  ringway cluster status -c n1.yaml\n  \
                            ringway cluster add-node -c n1.yaml n4 10.0.0.4:7946")]
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Run a tiny upstream that answers with its own name (for demos and tests).
    #[command(after_help = "Example:\n  ringway echo --listen 127.0.0.1:9001 --name e1")]
    Echo {
        /// Address to listen on (port 0: any free port, logged).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// The name it answers with.
        #[arg(long)]
        name: String,
    },
    /// Print a shell completion script to standard output.
    #[command(after_help = "Examples:\n  \
                            ringway completions bash > /usr/share/bash-completion/completions/ringway\n  \
                            ringway completions zsh > \"${fpath[1]}/_ringway\"\n  \
                            ringway completions fish > ~/.config/fish/completions/ringway.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to standard output, or write one per subcommand.
    #[command(after_help = "Examples:\n  ringway man | man -l -\n  \
                            ringway man --out-dir target/assets/man")]
    Man {
        /// Write ringway.1 and a page per subcommand (ringway-cluster-status.1, ...)
        /// into this directory instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate the file and summarise it (same as `ringway check`).
    #[command(after_help = "Example:\n  ringway config check -c ringway.yaml")]
    Check,
    /// Print the configuration in force as YAML, every default filled in; `check`
    /// accepts the output again.
    #[command(after_help = "Example:\n  ringway config dump -c /etc/ringway/ringway.yaml")]
    Dump,
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Show this instance's view: role, term, leader, commit and applied index, and
    /// each member with its replication lag.
    #[command(after_help = "Examples:\n  ringway cluster status -c n1.yaml\n  \
                            ringway cluster status --admin localhost:9480 --json")]
    Status {
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a member: it must be running with `cluster.join: true`. Answers once it is
    /// a voter, or with `--learner` once it is a learner.
    #[command(
        after_help = "Examples:\n  ringway cluster add-node -c n1.yaml n4 10.0.0.4:7946\n  \
                            ringway cluster add-node -c n1.yaml --learner edge7 10.0.1.7:7946"
    )]
    AddNode {
        /// Add it as a learner: it receives the log and serves from it, but never
        /// votes or campaigns (a fleet past five instances).
        #[arg(long)]
        learner: bool,
        /// Its node.id.
        name: String,
        /// Its cluster.address, as the other members reach it.
        peer_address: SocketAddr,
    },
    /// Make a learner a voter, once it has caught up.
    #[command(after_help = "Example:\n  ringway cluster promote-node -c n1.yaml edge7")]
    PromoteNode {
        /// Its node.id.
        name: String,
    },
    /// Make a voter a learner (one at a time; a leader demoted hands over first).
    #[command(after_help = "Example:\n  ringway cluster demote-node -c n1.yaml n4")]
    DemoteNode {
        /// Its node.id.
        name: String,
    },
    /// Remove a member from the Raft group.
    #[command(after_help = "Example:\n  ringway cluster remove-node -c n1.yaml n3")]
    RemoveNode {
        /// Its node.id.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.global) {
        return fail(e);
    }
    let g = &cli.global;
    match cli.command {
        Command::Run { threads } => with_path(g, "run", |p| run(p, threads)),
        Command::Check
        | Command::Config {
            action: ConfigAction::Check,
        } => with_path(g, "check", check),
        Command::Config {
            action: ConfigAction::Dump,
        } => with_path(g, "config dump", dump),
        Command::Route { pool, live, keys } => route(g, pool.as_deref(), live, &keys),
        Command::Cluster { action } => cluster(g, action),
        Command::Echo { listen, name } => runtime(Some(1))
            .and_then(|rt| {
                rt.block_on(ringway::echo::run(listen, name))
                    .map_err(|e| e.to_string())
            })
            .map_or_else(fail, |_| ExitCode::SUCCESS),
        Command::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "ringway", &mut out);
            flushed(out.flush())
        }
        Command::Man { out_dir } => man(out_dir.as_deref()),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("ringway: {message}");
    ExitCode::from(2)
}

/// Success unless writing to standard output failed (a closed pipe, a full disk).
fn flushed(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("cannot write to standard output: {e}")),
    }
}

/// Runs `f` on the `--config` path, which `command` needs.
fn with_path(g: &Global, command: &str, f: impl FnOnce(&Path) -> ExitCode) -> ExitCode {
    match &g.config {
        Some(path) => f(path),
        None => fail(format!("{command} needs --config FILE")),
    }
}

/// Logs go to standard error: in colour only when it is a terminal and `NO_COLOR` is
/// unset or empty. The level: `--log-level`, else `RUST_LOG`, else info.
fn init_logging(g: &Global) -> Result<(), String> {
    let filter = match (&g.log_level, std::env::var("RUST_LOG")) {
        (Some(level), _) => tracing_subscriber::EnvFilter::new(level),
        (None, Ok(env)) if !env.trim().is_empty() => {
            tracing_subscriber::EnvFilter::try_new(&env)
                .map_err(|e| format!("RUST_LOG={env:?} is not a log level or filter: {e}"))?
        }
        _ => tracing_subscriber::EnvFilter::new("info"),
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let colour = !no_color && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match g.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
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

/// Runs a client command's future on a runtime of one thread. The runtime is left
/// behind rather than waited for: a name lookup past its deadline may still sit in a
/// blocking thread, and the command's answer must not wait for it.
fn client<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    let rt = runtime(Some(1))?;
    let result = rt.block_on(f);
    rt.shutdown_background();
    result
}

/// Loads the config, then reads every TLS file it names: both kinds of error are
/// reported the same way, each at its field.
fn load(path: &Path) -> Result<Config, ExitCode> {
    ringway::control::load_file(path)
        .map(|(config, _)| config)
        .map_err(fail)
}

fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            println!("{}: valid", path.display());
            print!("{}", ringway::cli::summary(&config));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn dump(path: &Path) -> ExitCode {
    let text = match load(path) {
        Ok(config) => ringway::cli::dump::dump(&config, path),
        Err(code) => return code,
    };
    match text {
        Ok(text) => flushed(std::io::stdout().lock().write_all(text.as_bytes())),
        Err(e) => fail(e),
    }
}

fn man(out_dir: Option<&Path>) -> ExitCode {
    let result = match out_dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|_| clap_mangen::generate_to(Cli::command(), dir))
            .map_err(|e| format!("cannot write manual pages to {}: {e}", dir.display())),
        None => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout().lock())
            .map_err(|e| format!("cannot write to standard output: {e}")),
    };
    result.map_or_else(fail, |_| ExitCode::SUCCESS)
}

/// The config file, if one was given.
fn optional_config(g: &Global) -> Result<Option<Config>, ExitCode> {
    g.config.as_deref().map(load).transpose()
}

fn remote_args<'a>(g: &'a Global, config: Option<&'a Config>) -> RemoteArgs<'a> {
    RemoteArgs {
        config,
        admin: g.admin.clone(),
        token_file: g.token_file.as_deref(),
        cacert: g.cacert.as_deref(),
    }
}

fn route(g: &Global, pool: Option<&str>, live: bool, keys: &[String]) -> ExitCode {
    let config = match optional_config(g) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let lines = if live || g.admin.is_some() {
        Remote::from_args(remote_args(g, config.as_ref())).and_then(|remote| {
            let pool = ringway::cli::live_pool(config.as_ref(), pool)?;
            client(remote.route(&pool, keys))
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

fn cluster(g: &Global, action: ClusterAction) -> ExitCode {
    let config = match optional_config(g) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let answer = Remote::from_args(remote_args(g, config.as_ref())).and_then(|remote| {
        client(async {
            match action {
                ClusterAction::Status { json: true } => {
                    remote.status().await.map(|v| format!("{v:#}\n"))
                }
                ClusterAction::Status { json: false } => remote
                    .status()
                    .await
                    .map(|v| ringway::cli::remote::status_table(&v)),
                ClusterAction::AddNode {
                    learner,
                    name,
                    peer_address,
                } => {
                    remote
                        .add_node(&name, &peer_address.to_string(), learner)
                        .await
                }
                ClusterAction::PromoteNode { name } => remote.set_role(&name, "voter").await,
                ClusterAction::DemoteNode { name } => remote.set_role(&name, "learner").await,
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

fn run(path: &Path, threads: Option<usize>) -> ExitCode {
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

async fn serve(path: &Path, config: Config, text: Vec<u8>) -> Result<(), String> {
    let mut instance = Instance::start(path, config, text).await?;
    ringway::admin::Admin::start(&instance).await?;
    instance.bind().await?;
    instance.serve(ringway::shutdown::signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand, with its path from the top (`["cluster", "status"]`).
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
        // `help` is clap's own, with its own help.
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p = path.clone();
            p.push(sub.get_name().to_owned());
            walk(sub, p.clone(), out);
            out.push((p, sub.clone()));
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_has_help_and_every_subcommand_an_example() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut all = vec![(vec![], cmd.clone())];
        walk(&cmd, vec![], &mut all);
        assert!(all.len() >= 12, "{} commands", all.len());
        for (path, c) in &all {
            for arg in c.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "`ringway {}`: argument {id} has no help text",
                    path.join(" ")
                );
            }
            let after = c
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            let has_subcommands = c.get_subcommands().next().is_some();
            if !has_subcommands || !path.is_empty() {
                assert!(
                    after.starts_with("Example") && after.contains("\n  ringway "),
                    "`ringway {}` --help ends with no example: {after:?}",
                    path.join(" ")
                );
            }
        }
    }

    #[test]
    fn global_options_parse_before_and_after_the_subcommand() {
        for args in [
            &["ringway", "cluster", "status", "-c", "n1.yaml"][..],
            &["ringway", "-c", "n1.yaml", "cluster", "status"],
            &["ringway", "cluster", "-c", "n1.yaml", "status"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(
                cli.global.config,
                Some(PathBuf::from("n1.yaml")),
                "{args:?}"
            );
            assert!(matches!(
                cli.command,
                Command::Cluster {
                    action: ClusterAction::Status { json: false }
                }
            ));
        }
        let cli = Cli::try_parse_from([
            "ringway",
            "route",
            "--live",
            "k",
            "--admin",
            "localhost:9480",
            "--log-level",
            "debug",
            "--cacert",
            "ca.pem",
            "--token-file",
            "t",
            "--log-format",
            "json",
        ])
        .unwrap();
        let g = &cli.global;
        assert_eq!(g.admin.as_ref().map(|a| a.host.as_str()), Some("localhost"));
        assert_eq!(g.log_level.as_deref(), Some("debug"));
        assert_eq!(g.cacert, Some(PathBuf::from("ca.pem")));
        assert_eq!(g.token_file, Some(PathBuf::from("t")));
        assert!(matches!(g.log_format, LogFormat::Json));
    }

    #[test]
    fn bad_global_values_are_refused_by_name() {
        let e = Cli::try_parse_from(["ringway", "check", "--log-level", "warning"])
            .err()
            .expect("a bad level");
        assert!(e.to_string().contains("--log-level"), "{e}");
        let e = Cli::try_parse_from(["ringway", "cluster", "status", "--admin", "::1:9480"])
            .err()
            .expect("an unbracketed IPv6 address");
        assert!(e.to_string().contains("in brackets"), "{e}");
    }
}
