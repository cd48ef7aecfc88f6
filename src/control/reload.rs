//! Hot reload of the config file.
//!
//! A [`Reloader`] re-reads the file when it changes (inotify through `notify`, on the
//! file's directory so that editors that write a temporary file and rename it, and a
//! symlink swapped to a new target as Kubernetes does with ConfigMaps, are both seen;
//! only events that name the file itself or the `..data` link are acted on, so a log
//! written beside the file triggers nothing), on `SIGHUP`, and on a slow poll that
//! catches anything the watcher missed. Triggers are debounced ([`DEBOUNCE`]). The
//! file is read and parsed on the blocking pool, never on the proxy's workers, and
//! bytes seen before (the file in force, or the last file refused) are not parsed
//! again: an invalid file is reported once per change of its content.
//!
//! A valid new file takes effect in two ways: its routes, hash keys and timeouts are
//! published at once (the proxy rebuilds its snapshot from them), and what it changes
//! in pool membership is proposed to the cluster as one [`Command::Batch`] through the
//! [`Proposer`] (a follower hands it to the leader). Settings that only take effect at
//! start (node, listeners, admin, cluster, limits) keep their running values and are
//! reported as needing a restart. An invalid file changes nothing: the error is
//! logged with its place in the file, counted, and shown by the admin API until a
//! valid file is back, which the log then says.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::Proposer;
use crate::cluster::driver::ProposeFailure;
use crate::cluster::state::{file_changes, Command};
use crate::config::Config;

/// Quiet time after a change event before the file is read: editors and ConfigMap
/// updates touch several directory entries in a burst.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// The file is also compared on this interval, in case the watcher missed an event
/// (or could not start).
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);
pub use crate::config::bounds::MAX_CONFIG_BYTES;
/// How long a reload's cluster change may take to commit.
pub const RELOAD_PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// While the cluster cannot take a change yet (not bootstrapped, no leader known), the
/// reload is retried after this long, doubling up to [`POLL_INTERVAL`].
pub const RELOAD_RETRY: Duration = Duration::from_millis(250);

/// What the admin API and metrics show about reloads.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    pub file: PathBuf,
    /// Successful loads, the first at start.
    pub loaded: u64,
    /// Reloads refused (invalid file, unreadable file, or a change the cluster did
    /// not take).
    pub failed: u64,
    /// Unix time (seconds) of the last successful load.
    pub last_success_unix: u64,
    /// Why the last attempt failed, if it did; cleared by the next success.
    pub last_error: Option<String>,
    /// Settings changed in the file that take effect only after a restart.
    pub restart_required: Vec<String>,
    /// Raft index at which the last reload's pool changes applied.
    pub last_applied: Option<u64>,
    /// Why a changed file waits to be applied (the cluster cannot take it yet).
    pub pending: Option<String>,
}

/// What a reload came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// A new config is in force.
    Applied,
    /// Nothing to do: the file did not change.
    Unchanged,
    /// Refused: the last good config stays (see the status for why).
    Refused,
    /// Valid, but the cluster cannot take its changes yet; retry later.
    Pending,
}

/// Re-reads, validates and applies the config file; see the module docs.
pub struct Reloader {
    path: PathBuf,
    /// The file as last loaded (what the next edit is compared with).
    file: Mutex<(Arc<Config>, Vec<u8>)>,
    /// The config in force: the file's pools with the start-time settings.
    current: watch::Sender<Arc<Config>>,
    /// The bytes of the last file refused as invalid: not parsed (nor reported) again.
    refused: Mutex<Option<Vec<u8>>>,
    status: Mutex<ReloadStatus>,
    proposer: Proposer,
    /// Told of every reload that applied (`true`) or was refused (`false`): metrics.
    observer: Option<Observer>,
}

/// See [`Reloader::observe`].
pub type Observer = Arc<dyn Fn(bool) + Send + Sync>;

/// Why a reload did not apply.
#[derive(Debug)]
enum Failure {
    Invalid(String),
    Cluster(String),
    NotYet(String),
}

impl Reloader {
    /// A reloader for `path`, whose content at start was `text`, parsed as `config`.
    pub fn new(
        path: &Path,
        config: Arc<Config>,
        text: Vec<u8>,
        proposer: Proposer,
    ) -> Arc<Reloader> {
        let (current, _) = watch::channel(config.clone());
        let status = ReloadStatus {
            file: path.to_owned(),
            loaded: 1,
            last_success_unix: unix_now(),
            ..ReloadStatus::default()
        };
        Arc::new(Reloader {
            path: path.to_owned(),
            file: Mutex::new((config, text)),
            refused: Mutex::new(None),
            current,
            status: Mutex::new(status),
            proposer,
            observer: None,
        })
    }

    /// The same reloader, telling `observer` of every reload that applied or was
    /// refused. Call before sharing it.
    pub fn observe(mut self: Arc<Self>, observer: Observer) -> Arc<Self> {
        if let Some(r) = Arc::get_mut(&mut self) {
            r.observer = Some(observer);
        }
        self
    }

    fn tell(&self, ok: bool) {
        if let Some(o) = &self.observer {
            o(ok);
        }
    }

    /// The config in force, and every later one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.current.subscribe()
    }

    pub fn status(&self) -> ReloadStatus {
        lock(&self.status).clone()
    }

    /// Watches the file and `SIGHUP` until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // One pending trigger is enough: a burst of events coalesces into one read.
        let (tx, mut rx) = mpsc::channel::<bool>(1);
        let _watcher = match watch_dir(&self.path, tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot watch the config file; it is polled every {} s", POLL_INTERVAL.as_secs());
                None
            }
        };
        spawn_sighup(tx.clone());
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.tick().await;
        let mut retry: Option<Duration> = None;
        loop {
            let wait = retry.unwrap_or(POLL_INTERVAL);
            let forced = tokio::select! {
                t = rx.recv() => t.unwrap_or(false),
                _ = poll.tick() => false,
                _ = tokio::time::sleep(wait), if retry.is_some() => false,
                _ = shutdown.wait_for(|&s| s) => return,
            };
            let mut forced = forced;
            if !forced {
                tokio::time::sleep(DEBOUNCE).await;
            }
            while let Ok(f) = rx.try_recv() {
                forced |= f;
            }
            retry = match self.reload(forced).await {
                Reloaded::Pending => {
                    Some(retry.map_or(RELOAD_RETRY, |r| (r * 2).min(POLL_INTERVAL)))
                }
                _ => None,
            };
        }
    }

    /// Reads the file and applies it if it changed (or `forced`, as on `SIGHUP`).
    pub async fn reload(&self, forced: bool) -> Reloaded {
        let path = self.path.clone();
        let text = match blocking(move || read_bounded(&path)).await {
            Ok(t) => t,
            Err(e) => return self.failed(Failure::Invalid(e)),
        };
        let old = {
            let file = lock(&self.file);
            if file.1 == text && !forced {
                drop(file);
                self.valid_again();
                return Reloaded::Unchanged;
            }
            file.0.clone()
        };
        if !forced && lock(&self.refused).as_deref() == Some(text.as_slice()) {
            return Reloaded::Unchanged;
        }
        let (path, bytes) = (self.path.clone(), text.clone());
        let new = match blocking(move || parse_file(&path, &bytes)).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                *lock(&self.refused) = Some(text);
                return self.failed(Failure::Invalid(e));
            }
        };
        *lock(&self.refused) = None;
        let restart = restart_required(&self.current.borrow(), &new);
        for what in &restart {
            tracing::warn!(file = %self.path.display(), setting = %what, "changed in the file; takes effect after a restart");
        }
        let applied = match self.propose(&old, &new).await {
            Ok(index) => index,
            Err(e) => return self.failed(e),
        };
        let effective = Arc::new(effective(&self.current.borrow(), &new));
        *lock(&self.file) = (new, text);
        self.current.send_replace(effective);
        let mut st = lock(&self.status);
        st.loaded += 1;
        st.last_success_unix = unix_now();
        st.last_error = None;
        st.pending = None;
        st.restart_required = restart;
        if applied.is_some() {
            st.last_applied = applied;
        }
        drop(st);
        self.tell(true);
        tracing::info!(file = %self.path.display(), cluster_index = ?applied, "config reloaded");
        Reloaded::Applied
    }

    /// The file in force is back after a refused one (an edit undone): the error is
    /// cleared and the log says so.
    fn valid_again(&self) {
        *lock(&self.refused) = None;
        let mut st = lock(&self.status);
        if st.last_error.take().is_some() {
            tracing::info!(file = %self.path.display(), "config file is valid again (as in force); the last error is cleared");
        }
    }

    /// Proposes what the edit changes in pool membership; `None` when it changes
    /// nothing the cluster does not already hold.
    async fn propose(&self, old: &Config, new: &Config) -> Result<Option<u64>, Failure> {
        let state = self.proposer.cluster().view().state.clone();
        if !state.is_bootstrapped() {
            // The bootstrap copies the file the instance started with; this edit is
            // carried over once it has applied.
            return Err(Failure::NotYet(
                "the cluster has not bootstrapped yet".into(),
            ));
        }
        let commands = file_changes(old, new, &state);
        if commands.is_empty() {
            return Ok(None);
        }
        let batch = Command::Batch { commands }
            .with_slow_start(|p| new.slow_start(p), super::breakers::wall_ms());
        let proposed =
            tokio::time::timeout(RELOAD_PROPOSE_TIMEOUT, self.proposer.propose(batch)).await;
        match proposed {
            Err(_) => Err(Failure::Cluster(
                "the cluster did not commit the file's changes in time".into(),
            )),
            Ok(Ok(index)) => Ok(Some(index)),
            Ok(Err(ProposeFailure::NotLeader { .. })) => Err(Failure::NotYet(
                "no leader is known (an election, or this instance is cut off)".into(),
            )),
            Ok(Err(
                e @ (ProposeFailure::Busy | ProposeFailure::Lost | ProposeFailure::NotYet(_)),
            )) => Err(Failure::NotYet(e.to_string())),
            Ok(Err(e)) => Err(Failure::Cluster(format!(
                "the cluster did not take the file's changes: {e}"
            ))),
        }
    }

    fn failed(&self, why: Failure) -> Reloaded {
        let text = match why {
            Failure::Invalid(e) | Failure::Cluster(e) => e,
            Failure::NotYet(e) => {
                tracing::info!(file = %self.path.display(), reason = %e, "config change waits for the cluster");
                lock(&self.status).pending = Some(e);
                return Reloaded::Pending;
            }
        };
        tracing::error!(file = %self.path.display(), error = %text, "config reload refused; the last good config stays in force");
        {
            let mut st = lock(&self.status);
            st.failed += 1;
            st.last_error = Some(text);
        }
        self.tell(false);
        Reloaded::Refused
    }
}

/// A config file's bytes as a validated config, its TLS files read and checked too;
/// every error is named with its place.
pub fn parse_file(path: &Path, text: &[u8]) -> Result<Config, String> {
    let text = std::str::from_utf8(text)
        .map_err(|e| format!("{}: not UTF-8 text: {e}", path.display()))?;
    let config = Config::from_file_text(path, text).map_err(|e| e.to_string())?;
    let errors = crate::tls::check(&config);
    if !errors.is_empty() {
        return Err(crate::config::ConfigError::Invalid {
            path: path.to_owned(),
            errors,
        }
        .to_string());
    }
    Ok(config)
}

/// The settings that differ between the running config and `new` but take effect
/// only at start.
pub fn restart_required(running: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if running.node.id != new.node.id {
        out.push("node.id".to_owned());
    }
    if running.node.data_dir != new.node.data_dir {
        out.push("node.data_dir".to_owned());
    }
    if running.listeners != new.listeners {
        out.push("listeners".to_owned());
    }
    if running.admin != new.admin {
        out.push("admin".to_owned());
    }
    if running.cluster != new.cluster {
        out.push("cluster".to_owned());
    }
    if running.limits != new.limits {
        out.push("limits".to_owned());
    }
    out
}

/// `new`'s pools and access log with `running`'s start-time settings.
fn effective(running: &Config, new: &Config) -> Config {
    Config {
        pools: new.pools.clone(),
        access_log: new.access_log.clone(),
        ..running.clone()
    }
}

/// Runs file work on the blocking pool: a slow disk or a pathological file never
/// holds a proxy worker.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(format!("reading the config file failed: {e}")))
}

/// Reads at most [`MAX_CONFIG_BYTES`] of `path` (the config module's one bounded
/// read); a larger file is an error naming the file.
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    crate::config::read_bounded(path).map_err(|e| e.to_string())
}

/// Watches the directory holding `path` (not the file: a rename over it or a swapped
/// symlink replaces the inode a file watch would follow).
fn watch_dir(path: &Path, tx: mpsc::Sender<bool>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_owned());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !event.kind.is_access() && names_the_file(&event.paths, name.as_deref()) {
            // Full means a read is already pending.
            let _ = tx.try_send(false);
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// True when an event is about the config file itself, or about the `..data` link a
/// Kubernetes ConfigMap volume swaps to publish a new version. Anything else in the
/// directory (a log file written beside the config, an editor's swap file) is not.
fn names_the_file(paths: &[PathBuf], name: Option<&std::ffi::OsStr>) -> bool {
    paths.iter().any(|p| {
        let file = p.file_name();
        file.is_some() && (file == name || file == Some(std::ffi::OsStr::new("..data")))
    })
}

#[cfg(unix)]
fn spawn_sighup(tx: mpsc::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: re-reading the config file");
                    if tx.send(true).await.is_err() {
                        return;
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
    }
}

#[cfg(not(unix))]
fn spawn_sighup(_tx: mpsc::Sender<bool>) {}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Locks a mutex held only for short, await-free sections; a poisoned one is still
/// consistent (every section writes whole values).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
