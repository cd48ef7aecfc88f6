//! The control layer: the wiring of one ringway instance between its data plane
//! ([`crate::proxy`]) and its cluster member ([`crate::cluster`]), neither of which
//! knows the other.
//!
//! - [`Instance`]: start and stop a whole instance (the `ringway run` command, and
//!   tests that run instances in-process).
//! - [`Proposer`] (from [`crate::cluster::forward`]): the one path every change takes
//!   to the cluster, proposed on the leader, handed to it over the cluster transport
//!   by a follower.
//! - [`reload`]: the config file watched, re-read off the runtime, validated, its
//!   routes published and its membership changes proposed.
//! - [`follow`]: committed state followed into routing snapshots.
//! - [`breakers`]: the breaker controller (trips become reports; the leader's
//!   half-open probes and readmissions).
//! - [`active`]: active health checks following the snapshots.
//! - [`slow_start`]: the leader steps every slow start in the replicated state.
//! - [`discover`]: the leader resolves discovered pools and proposes their upstreams.
//! - [`member`]: this instance's cluster member started (data-dir lock, storage,
//!   transport with mutual TLS or the cluster secret, the driver thread).
//! - [`load_file`]: a config file read (bounded), parsed and its TLS files checked,
//!   the one way `run`, `check`, `route` and reload read a file.

pub mod active;
pub mod breakers;
pub mod discover;
pub mod follow;
pub mod member;
pub mod reload;
pub mod slow_start;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

pub use self::member::Member;
use crate::cluster::driver::{ClusterView, StorageHealth};
use crate::config::Config;
use crate::proxy::server::Server;
use crate::proxy::{Proxy, Snapshot};
use crate::tls::ServerTls;

pub use self::reload::Reloader;
pub use crate::cluster::forward::Proposer;

/// Reads `path` (at most [`reload::MAX_CONFIG_BYTES`]), parses it and reads every TLS
/// file it names; every error is named with its place. Returns the bytes too: the
/// reloader compares later versions with them.
pub fn load_file(path: &Path) -> Result<(Config, Vec<u8>), String> {
    let text = reload::read_bounded(path)?;
    let config = reload::parse_file(path, &text)?;
    Ok((config, text))
}

/// An admin token file's first line, which must not be empty.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
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

/// A running instance: listeners serving, the cluster member, the reloader, the
/// health tasks. The admin API is started beside it by its caller.
pub struct Instance {
    /// The config the instance started with (start-time settings come from it).
    pub config: Arc<Config>,
    pub proxy: Arc<Proxy>,
    pub member: Member,
    pub proposer: Proposer,
    pub reloader: Arc<Reloader>,
    /// What DNS discovery did on this instance, for the admin API.
    pub discovery: Arc<discover::Board>,
    /// The proxy's listeners, once bound ([`Instance::bind`]).
    server: Option<Server>,
    stop_tx: watch::Sender<bool>,
}

impl Instance {
    /// Starts every part of an instance but its listeners and the admin API, from the
    /// file at `path` whose bytes were `text`, parsed as `config`. The listeners are
    /// bound by [`Instance::bind`] (or [`Instance::serve`]), so a caller can start the
    /// admin API first: once the proxy port accepts, the admin port does too.
    pub async fn start(path: &Path, config: Config, text: Vec<u8>) -> Result<Instance, String> {
        let config = Arc::new(config);
        let joining = config.cluster.as_ref().is_some_and(|c| c.join);
        let proxy = Arc::new(Proxy::new(Snapshot::build(&config, None)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let member = Member::start(&config, stop_rx.clone()).map_err(|e| e.to_string())?;
        proxy.metrics().register_cluster(
            &member.handle,
            &member.names,
            &member.transport,
            &member.storage_sync,
        );
        proxy.metrics().config_loaded();
        let proposer = member.proposer();
        let observed = proxy.clone();
        let reloader = Reloader::new(path, config.clone(), text, proposer.clone())
            .observe(Arc::new(move |ok| observed.metrics().config_reload(ok)));
        tokio::spawn(reloader.clone().run(stop_rx.clone()));
        tokio::spawn(follow::follow_cluster(
            member.handle.clone(),
            reloader.subscribe(),
            proxy.clone(),
            joining,
        ));
        tokio::spawn(active::run(proxy.clone(), stop_rx.clone()));
        let health = breakers::Controller {
            node: config.node.id.clone(),
            proxy: proxy.clone(),
            proposer: proposer.clone(),
        };
        tokio::spawn(health.run(stop_rx.clone()));
        tokio::spawn(slow_start::run(proposer.clone(), stop_rx.clone()));
        let discovery = Arc::new(discover::Board::default());
        let discovering = discover::Controller {
            proposer: proposer.clone(),
            config: reloader.subscribe(),
            board: discovery.clone(),
            metrics: proxy.metrics().clone(),
        };
        tokio::spawn(discovering.run(stop_rx.clone()));
        Ok(Instance {
            config,
            proxy,
            member,
            proposer,
            reloader,
            discovery,
            server: None,
            stop_tx,
        })
    }

    /// Binds the proxy's listeners (once; later calls do nothing).
    pub async fn bind(&mut self) -> Result<(), String> {
        if self.server.is_some() {
            return Ok(());
        }
        let config = &self.config;
        let addrs: Vec<SocketAddr> = config.listeners.iter().map(|l| l.address).collect();
        let server = Server::bind(&addrs, self.proxy.clone(), config.limits.clone())
            .await
            .map_err(|e| e.to_string())?
            .with_tls(listener_tls(config)?)
            .with_headers(config.listeners.iter().map(|l| l.headers));
        for addr in server.local_addrs() {
            tracing::info!(%addr, pools = config.pools.len(), "ringway listening");
        }
        self.server = Some(server);
        Ok(())
    }

    /// The addresses the proxy listens on (port 0 in the file resolved); none before
    /// [`Instance::bind`].
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.server
            .as_ref()
            .map_or_else(Vec::new, |s| s.local_addrs())
    }

    /// Turns true when the instance begins to stop: the admin API and other tasks
    /// beside it stop with it.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }

    /// Serves until `stop` completes, then drains the listeners (bounded by
    /// `limits.shutdown_grace_ms`) while the cluster member hands leadership over and
    /// stops, and lets the access log write its queued lines.
    pub async fn serve(mut self, stop: impl Future<Output = ()> + Send) -> Result<(), String> {
        let bound = self.bind().await;
        let stop_tx = self.stop_tx;
        let Some(server) = self.server.take().filter(|_| bound.is_ok()) else {
            let _ = stop_tx.send(true);
            let member = self.member;
            let _ = tokio::task::spawn_blocking(move || member.join()).await;
            return bound;
        };
        // A Raft log that cannot be trusted stops the whole instance (a supervisor
        // restarts it, and recovery reads what is on disk), rather than a proxy that
        // serves on while its member has silently left the cluster.
        let failed = log_failed(self.member.handle.subscribe());
        let (why_tx, why_rx) = tokio::sync::oneshot::channel();
        let stop = async move {
            let why = tokio::select! {
                _ = stop => None,
                error = failed => Some(error),
            };
            let _ = stop_tx.send(true);
            let _ = why_tx.send(why);
        };
        server.run(stop).await;
        let why = why_rx.await.ok().flatten();
        crate::proxy::access::flushed().await;
        let member = self.member;
        tokio::task::spawn_blocking(move || member.join())
            .await
            .map_err(|e| e.to_string())?;
        match why {
            Some(error) => Err(format!(
                "stopped: the Raft log in node.data_dir cannot be written ({error}); start again to recover from what is on disk"
            )),
            None => Ok(()),
        }
    }
}

/// Each listener's TLS, indexed like the listeners; warns about every pool that does
/// not verify its upstreams' certificates.
fn listener_tls(config: &Config) -> Result<Vec<Option<ServerTls>>, String> {
    for pool in config
        .pools
        .iter()
        .filter(|p| p.tls.as_ref().is_some_and(|t| t.insecure_skip_verify))
    {
        tracing::warn!(pool = %pool.name, "insecure_skip_verify is on: upstream TLS certificates of this pool are NOT verified");
    }
    let mut out = Vec::with_capacity(config.listeners.len());
    for (i, l) in config.listeners.iter().enumerate() {
        let tls = match &l.tls {
            Some(t) => Some(
                ServerTls::new(t).map_err(|e| format!("listeners[{i}].tls.{}: {e}", e.field))?,
            ),
            None => None,
        };
        out.push(tls);
    }
    Ok(out)
}

/// Resolves with the error once the cluster member reports its log failed.
async fn log_failed(mut view: watch::Receiver<Arc<ClusterView>>) -> String {
    loop {
        if let StorageHealth::Failed { error } = &view.borrow_and_update().storage {
            return error.clone();
        }
        if view.changed().await.is_err() {
            if let StorageHealth::Failed { error } = &view.borrow().storage {
                return error.clone();
            }
            return std::future::pending().await;
        }
    }
}
