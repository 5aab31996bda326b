//! Boots the shards and the control executor, and runs transactions.
//!
//! Threads: one [`crate::rt`] runtime per shard, pinned to its core, and one
//! unpinned control runtime that owns the running [`Model`], serves the
//! admin API and watches signals. Each shard is joined to the control
//! thread by a pair of lock-free channels (a crossbeam queue, and an eventfd
//! whose read is always posted on the receiving thread's ring to wake it).
//!
//! A transaction: parse -> validate on a clone of the model (R10) -> build
//! the snapshot (rustls configs; failure refuses the change) -> send it to
//! every shard -> wait for every acknowledgement (R6) -> commit the model
//! and reply with the epochs opened and the propagation time.
//!
//! Failures are a [`ControlError`], which says whose fault they are: the
//! operator's (bad text, refused command, TLS settings rustls refuses, a
//! save the file system does not allow: HTTP 400 or 409, exit 1, nothing
//! changed) or the proxy's (a shard that did not acknowledge, a thread that
//! did not start: HTTP 500, exit 70).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rt::{self, Receiver, Sender};
use serde_json::json;
use tracing::{error, info, warn};

use crate::config::{self, BatchError, CommandError, ConfigError, Model};
use crate::shard::{run_shard, ShardMsg, ShardReply, ShardReport};
use crate::snapshot::{ChangeNotes, Snapshot, SnapshotError};

/// Why a change, a save, a reload or the start did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The text is not commands of the language; nothing changed.
    #[error("{}", lines(.0))]
    Parse(Vec<ConfigError>),
    /// Validation refused a command of the batch; nothing changed.
    #[error(transparent)]
    Refused(#[from] BatchError),
    /// The configuration file does not load (start-up, SIGHUP).
    #[error("{}", lines(.0))]
    Load(Vec<ConfigError>),
    /// A vserver would listen on the admin API's address.
    #[error("{0}")]
    AdminAddress(String),
    /// rustls refuses the TLS settings the change leads to; nothing changed.
    #[error(transparent)]
    Tls(#[from] SnapshotError),
    /// A shard died, stalled or answered out of turn: the change may be
    /// live on some cores only, so the process stops (fail-stop).
    #[error("{0}")]
    ShardFailed(String),
    /// The configuration file could not be written (a folder in the way,
    /// no permission, a full disk): the operator's to fix; the old file is
    /// kept. `source` is the OS error alone; the message names the path once.
    #[error("cannot save to {path}: {source}")]
    Save { path: String, source: std::io::Error },
    /// The admin API cannot listen where `--admin` says (not an address,
    /// already taken, no permission): the operator's to fix, like a bad file.
    #[error("{0}")]
    AdminListen(String),
    /// The process could not start (signals, threads).
    #[error("{0}")]
    Startup(String),
    /// This host does not let a runtime thread start (io_uring blocked or
    /// missing, too little locked memory): the operator's to fix.
    #[error("{0}")]
    Host(String),
}

fn lines(errors: &[ConfigError]) -> String {
    errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

/// Exit status for a fault of the proxy itself (sysexits' EX_SOFTWARE).
pub const EXIT_INTERNAL: u8 = 70;

impl ControlError {
    /// The operator's mistake (nothing changed; fix the input and retry),
    /// rather than a fault of the proxy.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, ControlError::ShardFailed(_) | ControlError::Startup(_))
    }

    /// The admin API's status: 409 when the command clashes with the running
    /// configuration or the machine (exists, in use, address taken, a file
    /// that cannot be written), 400 for other mistakes, 500 for faults.
    pub fn http_status(&self) -> u16 {
        match self {
            ControlError::Refused(BatchError {
                reason: CommandError::Conflict(_),
                ..
            })
            | ControlError::AdminAddress(_)
            | ControlError::Save { .. } => 409,
            e if e.is_user_error() => 400,
            _ => 500,
        }
    }

    /// Exit status of `run`: 1 for a mistake in the configuration, 70 for a fault.
    pub fn exit_code(&self) -> u8 {
        if self.is_user_error() {
            1
        } else {
            EXIT_INTERNAL
        }
    }
}

/// How long a shard may take to apply a change or answer for statistics
/// before the control thread declares it stuck and stops the process.
pub const SHARD_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit status when a shard panicked (fail-stop: the service manager restarts
/// the process rather than leave a core dead with its listener open).
pub const EXIT_SHARD_FAILED: i32 = 70;

/// How long SIGTERM lets connections finish before closing them.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Options of `shardtls run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config: PathBuf,
    pub shards: Option<usize>,
    /// Where the admin API listens and who may use it.
    pub admin: super::access::AdminOptions,
    /// See [`crate::rt::Builder::batch_wait_us`].
    pub batch_wait_us: u32,
    /// What certificate and key files may be read.
    pub files: FileRules,
    /// Where the access log goes and in which format; `None`: no access log.
    pub access_log: Option<(crate::access_log::Target, crate::access_log::Format)>,
}

/// What certificate and key files `run` may read (`run --allow-dir`,
/// `--allow-insecure-key-mode`; `config::apply::files` says how).
#[derive(Clone, Debug, Default)]
pub struct FileRules {
    /// Folders run-time commands may read from besides the config file's.
    pub allow_dirs: Vec<PathBuf>,
    /// Read private keys others can read, or owned by another user, with a warning.
    pub allow_insecure_key_mode: bool,
}

impl FileRules {
    /// Files named in the config file at `config`: anywhere.
    fn in_config(&self, config: &Path) -> config::DirFileSource {
        config::DirFileSource::new(config::config_dir(config)).allow_insecure_key_mode(self.allow_insecure_key_mode)
    }

    /// Files named by run-time commands: inside the config file's folder
    /// or an allowed one (each must exist: a mistake of the operator's).
    fn at_run_time(&self, config: &Path) -> Result<config::DirFileSource, ControlError> {
        let mut dirs = vec![config::config_dir(config)];
        dirs.extend(self.allow_dirs.iter().cloned());
        let dirs = config::canonical_dirs(&dirs).map_err(|reason| {
            ControlError::Load(vec![ConfigError {
                file: "run --allow-dir".to_string(),
                line: 0,
                reason,
            }])
        })?;
        Ok(self.in_config(config).confined_to(dirs))
    }
}

/// Keep this process out of core dumps (and ptrace by other users):
/// `PR_SET_DUMPABLE` 0, so a crash never writes key material to disk.
/// `allowed` sets it back to 1 (`run --allow-core-dumps`).
pub fn set_core_dumps(allowed: bool) -> std::io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(allowed)) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One warning for each `SSL_TCP` back end of `new` that accepts any server
/// certificate and did not in `old` (or was not there), logged and returned
/// for the reply to the command that caused it.
fn warn_unverified_backends(old: &Model, new: &Model) -> Vec<String> {
    let before = old.unverified_backends();
    let warnings: Vec<String> = new
        .unverified_backends()
        .into_iter()
        .filter(|e| !before.contains(e))
        .map(|e| {
            format!("{e}: SSL_TCP without -serverAuth ENABLED: any back-end certificate is accepted (not verified)")
        })
        .collect();
    for w in &warnings {
        warn!("{w}");
    }
    warnings
}

/// Default of `run --batch-wait-us`: a waiting shard wakes on the first
/// completion (batching cost more latency than it saved CPU; tuning.md).
pub const DEFAULT_BATCH_WAIT_US: u32 = 0;

/// What one applied change did, for the admin reply.
#[derive(Debug, Default, Clone)]
pub struct ApplyReport {
    pub generation: u64,
    pub bumped: Vec<(String, u64)>,
    pub disabled: Vec<String>,
    pub killed: usize,
    pub draining: usize,
    pub propagation: Duration,
    /// What a shard could not do (a listener it could not open).
    pub errors: Vec<String>,
    /// What the change allows that the operator should know of (a back end
    /// whose certificate is not verified).
    pub warnings: Vec<String>,
}

impl ApplyReport {
    pub fn to_text(&self) -> String {
        let mut s = format!("Done. generation {}\n", self.generation);
        for (e, epoch) in &self.bumped {
            s.push_str(&format!("  epoch opened: {e} -> {epoch}\n"));
        }
        for e in &self.disabled {
            s.push_str(&format!("  disabled: {e}\n"));
        }
        s.push_str(&format!(
            "  established connections draining: {}\n  handshakes killed: {}\n  propagation: {} us (all shards applied)\n",
            self.draining,
            self.killed,
            self.propagation.as_micros()
        ));
        // `ctl` prints the lines starting `warning: ` on standard error.
        for e in self.errors.iter().chain(&self.warnings) {
            s.push_str(&format!("warning: {e}\n"));
        }
        s
    }
}

/// Refuse a configuration in which a vserver would listen where the admin
/// API does: the admin API must never be reachable through a vserver, and a
/// vserver must never lose its address to it. Two addresses clash when the
/// ports match and the IPs match or either is a wildcard.
pub fn check_admin_address(model: &config::Model, admin: Option<std::net::SocketAddr>) -> Result<(), ControlError> {
    let Some(admin) = admin else { return Ok(()) };
    for v in model.vservers.values() {
        let a = v.addr;
        let ips_overlap = a.ip() == admin.ip() || a.ip().is_unspecified() || admin.ip().is_unspecified();
        if a.port() == admin.port() && ips_overlap {
            return Err(ControlError::AdminAddress(format!(
                "vserver {} on {a} would share the admin API's address {admin}; use another port",
                v.name
            )));
        }
    }
    Ok(())
}

/// The control executor's state.
pub struct Control {
    pub model: Model,
    pub snapshot: Arc<Snapshot>,
    pub config_path: PathBuf,
    senders: Vec<Sender<ShardMsg>>,
    replies: Vec<Receiver<ShardReply>>,
    pub started: Instant,
    /// The admin API's TCP address, kept out of every vserver's way.
    pub admin_addr: Option<std::net::SocketAddr>,
    /// Set when a shard died, stalled or answered out of turn: the process
    /// can no longer say which configuration every core serves, so it stops
    /// (fail-stop, exit non-zero) once the current reply is sent.
    pub failed: Option<String>,
    /// Reads the files the config file names (start-up, SIGHUP).
    files_in_config: config::DirFileSource,
    /// Reads the files run-time commands name: allowed folders only.
    files_at_run_time: config::DirFileSource,
}

impl Control {
    /// Send `snap` to every shard and wait until each has applied it (R6):
    /// every shard must answer `Applied` for this generation within
    /// [`SHARD_REPLY_TIMEOUT`]. Otherwise the change is not reported as
    /// live: the error names the shard, and the process fails stop.
    async fn broadcast(&mut self, snap: Arc<Snapshot>) -> Result<ApplyReport, ControlError> {
        let t0 = Instant::now();
        for (i, s) in self.senders.iter().enumerate() {
            if s.send(ShardMsg::Apply(snap.clone())).is_err() {
                return Err(self.fail_stop(format!("shard {i} is gone; generation {} not applied", snap.generation)));
            }
        }
        let mut report = ApplyReport {
            generation: snap.generation,
            ..Default::default()
        };
        for i in 0..self.replies.len() {
            let reply = rt::timeout(SHARD_REPLY_TIMEOUT, self.replies[i].recv()).await;
            match reply {
                Ok(Some(ShardReply::Applied {
                    shard,
                    generation,
                    killed,
                    draining,
                    errors,
                    ..
                })) if shard == i && generation == snap.generation => {
                    report.killed += killed;
                    report.draining += draining;
                    report.errors.extend(errors);
                }
                Ok(Some(other)) => {
                    return Err(self.fail_stop(format!(
                        "shard {i} answered {other:?} instead of applying generation {}",
                        snap.generation
                    )))
                }
                Ok(None) => {
                    return Err(self.fail_stop(format!("shard {i} is gone; generation {} not applied", snap.generation)))
                }
                Err(_) => {
                    return Err(self.fail_stop(format!(
                        "shard {i} did not apply generation {} within {} s",
                        snap.generation,
                        SHARD_REPLY_TIMEOUT.as_secs()
                    )))
                }
            }
        }
        report.propagation = t0.elapsed();
        report.bumped = snap.notes.bumped.iter().map(|(e, n)| (e.to_string(), *n)).collect();
        report.disabled = snap.notes.disabled.iter().map(|e| e.to_string()).collect();
        Ok(report)
    }

    /// Record that a shard can no longer be trusted; returns the error to report.
    fn fail_stop(&mut self, why: String) -> ControlError {
        error!("{why}: stopping (fail-stop) so that the service manager restarts shardtls");
        self.failed.get_or_insert(why.clone());
        ControlError::ShardFailed(format!("{why}; the change is not live, and shardtls is stopping"))
    }

    /// Validate and apply a batch of commands as one transaction.
    pub async fn apply_text(&mut self, text: &str, source: &str) -> Result<ApplyReport, ControlError> {
        let cmds = config::parse_text(text, source).map_err(ControlError::Parse)?;
        self.apply_commands(&cmds).await
    }

    /// Validate and apply run-time commands as one transaction.
    pub async fn apply_commands(&mut self, cmds: &[(usize, config::Command)]) -> Result<ApplyReport, ControlError> {
        let files = self.files_at_run_time.clone();
        self.apply_with(cmds, &files).await
    }

    async fn apply_with(
        &mut self,
        cmds: &[(usize, config::Command)],
        files: &config::DirFileSource,
    ) -> Result<ApplyReport, ControlError> {
        let (model, changes) = self.model.apply_batch(cmds, files)?;
        check_admin_address(&model, self.admin_addr)?;
        let mut notes = ChangeNotes::default();
        for ch in &changes {
            for e in &ch.bumped {
                let epoch = model.epochs.get(e).copied().unwrap_or(1);
                notes.bumped.retain(|(x, _)| x != e);
                notes.bumped.push((e.clone(), epoch));
            }
            notes.disabled.extend(ch.disabled.iter().cloned());
        }
        let snap = Snapshot::build(&model, Some(&self.snapshot), self.snapshot.generation + 1, notes)?;
        let snap = Arc::new(snap);
        let mut report = self.broadcast(snap.clone()).await?;
        report.warnings = warn_unverified_backends(&self.model, &model);
        self.model = model;
        self.snapshot = snap;
        Ok(report)
    }

    /// Statistics of every shard, as `/stats` JSON.
    pub async fn stats(&mut self) -> serde_json::Value {
        let reports = self.shard_reports().await;
        self.stats_json(&reports)
    }

    /// `/stats` JSON from every shard's report.
    pub fn stats_json(&self, reports: &[ShardReport]) -> serde_json::Value {
        json!({
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "generation": self.snapshot.generation,
            "shards": reports.iter().map(ShardReport::to_json).collect::<Vec<_>>(),
            "access_log": crate::access_log::get().map(|l| json!({
                "lines_written": l.written(),
                "lines_dropped": l.dropped(),
            })),
        })
    }

    /// Every shard's statistics and histograms (a shard that does not
    /// answer in time fails the process, as for a change).
    pub async fn shard_reports(&mut self) -> Vec<ShardReport> {
        for s in &self.senders {
            let _ = s.send(ShardMsg::Stats);
        }
        let mut shards = Vec::new();
        for i in 0..self.replies.len() {
            match rt::timeout(SHARD_REPLY_TIMEOUT, self.replies[i].recv()).await {
                Ok(Some(ShardReply::Stats(r))) => shards.push(*r),
                Ok(other) => {
                    let _ = self.fail_stop(format!("shard {i} answered {other:?} to a statistics request"));
                }
                Err(_) => {
                    let _ = self.fail_stop(format!(
                        "shard {i} did not answer a statistics request within {} s",
                        SHARD_REPLY_TIMEOUT.as_secs()
                    ));
                }
            }
        }
        shards
    }

    /// `save ns config`: write the running configuration back atomically.
    pub fn save(&self) -> Result<String, ControlError> {
        let text = self.model.to_commands();
        config::save_atomically(&self.config_path, &text).map_err(|source| ControlError::Save {
            path: self.config_path.display().to_string(),
            source,
        })?;
        Ok(format!("Done. saved to {}\n", self.config_path.display()))
    }

    /// SIGHUP: re-read the file and apply the difference as one transaction.
    pub async fn reload(&mut self) -> Result<ApplyReport, ControlError> {
        let new = config::load_file_with(&self.config_path, &self.files_in_config).map_err(ControlError::Load)?;
        let cmds: Vec<(usize, config::Command)> = config::diff(&self.model, &new)
            .into_iter()
            .enumerate()
            .map(|(i, c)| (i + 1, c))
            .collect();
        if cmds.is_empty() {
            return Ok(ApplyReport {
                generation: self.snapshot.generation,
                ..Default::default()
            });
        }
        let files = self.files_in_config.clone();
        // The commands are the difference, not the file's lines: a refusal
        // names the file, not a line of the difference. (Whatever a line
        // of the file causes, loading it above reports at FILE:LINE.)
        let file = self.config_path.display().to_string();
        let whole_file = |reason: String| ControlError::Load(vec![ConfigError { file, line: 0, reason }]);
        match self.apply_with(&cmds, &files).await {
            Err(ControlError::Refused(e)) => Err(whole_file(e.reason.to_string())),
            Err(ControlError::Tls(e)) => Err(whole_file(e.to_string())),
            other => other,
        }
    }

    async fn drain(&mut self, deadline: Duration) {
        for s in &self.senders {
            let _ = s.send(ShardMsg::Drain(deadline));
        }
        for r in &self.replies {
            if let Some(ShardReply::Drained { shard, remaining }) = r.recv().await {
                if remaining > 0 {
                    warn!(
                        shard,
                        remaining, "connections still open at the drain deadline were closed"
                    );
                }
            }
        }
    }
}

/// CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    if ids.is_empty() {
        (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect()
    } else {
        ids.into_iter().map(|c| c.id).collect()
    }
}

/// Signals the control executor watches.
pub struct Signals {
    pub term: Arc<AtomicBool>,
    pub hup: Arc<AtomicBool>,
    /// SIGUSR1: reopen the access log (read by its writer). Registered
    /// with or without an access log, so a stray signal never stops the process.
    pub usr1: Arc<AtomicBool>,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        let term = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        let usr1 = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGINT, term.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, usr1.clone())?;
        Ok(Signals { term, hup, usr1 })
    }
}

/// A configuration file that passed every check `run` makes before it
/// serves: what [`validate`] returns.
pub struct Validated {
    pub model: Model,
    /// The first snapshot: generation 1, every entity at epoch 1.
    pub snapshot: Snapshot,
    /// The admin API's TCP address, if it listens on one.
    pub admin_addr: Option<std::net::SocketAddr>,
}

/// What `run` checks before serving `config`, and `check` alike: the file
/// loads (files read through `files`), no vserver listens on the admin
/// API's address (`admin` as `--admin` gives it), and rustls accepts every
/// TLS setting. Warns of back ends whose certificates are not verified.
pub fn validate(config: &Path, files: &config::DirFileSource, admin: Option<&str>) -> Result<Validated, ControlError> {
    // Start-up is the first epoch of everything (the loader's doing).
    let model = config::load_file_with(config, files).map_err(ControlError::Load)?;
    warn_unverified_backends(&Model::default(), &model);
    let admin_addr = match super::access::Endpoint::parse(admin) {
        Ok(super::access::Endpoint::Tcp(addr)) => Some(addr),
        Ok(super::access::Endpoint::Unix(_)) => None,
        Err(e) => return Err(ControlError::AdminListen(e)),
    };
    check_admin_address(&model, admin_addr)?;
    let snapshot = Snapshot::build(&model, None, 1, ChangeNotes::default())?;
    Ok(Validated {
        model,
        snapshot,
        admin_addr,
    })
}

/// Load, validate and serve `opts.config` until SIGTERM.
pub fn run(opts: RunOptions) -> Result<(), ControlError> {
    let files_in_config = opts.files.in_config(&opts.config);
    let files_at_run_time = opts.files.at_run_time(&opts.config)?;
    let Validated {
        model,
        snapshot,
        admin_addr,
    } = validate(&opts.config, &files_in_config, opts.admin.endpoint.as_deref())?;
    let snapshot = Arc::new(snapshot);
    let cpus = allowed_cpus();
    let n = opts.shards.unwrap_or(cpus.len()).max(1);
    if n > cpus.len() {
        warn!(
            "--shards {n} is more than the {} CPU(s) this process may use: shards share CPUs and wait \
             for each other, adding latency under load (tuning.md, \"Shards\")",
            cpus.len()
        );
    }
    let signals =
        Signals::install().map_err(|e| ControlError::Startup(format!("cannot install signal handlers: {e}")))?;
    if let Some((target, format)) = &opts.access_log {
        crate::access_log::start(target.clone(), *format, signals.usr1.clone())
            .map_err(|e| ControlError::Startup(format!("access log: {e}")))?;
    }
    // Before the shards start: the socket is created under a (process-wide) umask.
    let admin = super::admin::AdminListener::bind(&opts.admin).map_err(ControlError::AdminListen)?;

    let max_live = crate::shard::client_connection_limit(n);
    info!(
        shards = n,
        "each shard keeps at most {max_live} client connections (from ulimit -n)"
    );
    let mut shard_handles = Vec::new();
    let mut to_shards = Vec::new();
    let mut from_shards = Vec::new();
    for i in 0..n {
        let (tx, rx) = rt::shared_channel::<ShardMsg>();
        let (rtx, rrx) = rt::shared_channel::<ShardReply>();
        to_shards.push(tx);
        from_shards.push(rrx);
        let cpu = cpus[i % cpus.len()];
        let h = rt::Builder::new(&format!("shard-{i}"))
            .pin(Some(cpu))
            .exit_on_panic(EXIT_SHARD_FAILED)
            .batch_wait_us(opts.batch_wait_us)
            .spawn(move || run_shard(i, max_live, rx, rtx))
            .map_err(|e| ControlError::Host(format!("cannot start shard {i} on CPU {cpu}: {e}")))?;
        shard_handles.push(h);
    }
    let config_path = opts.config.clone();
    let control = rt::Builder::new("control")
        .exit_on_panic(EXIT_SHARD_FAILED)
        .spawn(move || async move {
            let mut ctl = Control {
                model,
                snapshot: snapshot.clone(),
                config_path,
                senders: to_shards,
                replies: from_shards,
                started: Instant::now(),
                admin_addr,
                failed: None,
                files_in_config,
                files_at_run_time,
            };
            let report = ctl.broadcast(snapshot).await?;
            for e in &report.errors {
                error!("{e}");
            }
            info!(shards = n, "serving");
            super::admin::serve(ctl, admin, signals).await
        })
        .map_err(|e| ControlError::Host(format!("cannot start the control thread: {e}")))?;
    let result = control
        .join()
        .map_err(|_| ControlError::ShardFailed("the control thread panicked".to_string()));
    if matches!(result, Ok(Ok(()))) {
        // Drained: every shard has finished. After a failure some may not.
        for h in shard_handles {
            let _ = h.join();
        }
    }
    // The lines of the last connections, drained or not, reach the file.
    if let Some(log) = crate::access_log::get() {
        log.stop();
    }
    result?
}

/// Drain all shards; used by the admin loop on SIGTERM.
pub(crate) async fn shutdown(ctl: &mut Control) {
    info!("SIGTERM: draining");
    ctl.drain(DRAIN_DEADLINE).await;
}

pub(crate) fn take(flag: &AtomicBool) -> bool {
    flag.swap(false, Ordering::SeqCst)
}

#[cfg(test)]
mod error_tests {
    use super::*;

    fn refused(reason: CommandError) -> ControlError {
        ControlError::Refused(BatchError { line: 1, reason })
    }

    #[test]
    fn mistakes_and_faults_get_their_own_status() {
        let conflict = refused(CommandError::Conflict("certKey a already exists".into()));
        assert_eq!((conflict.http_status(), conflict.exit_code()), (409, 1));
        assert_eq!(conflict.to_string(), "line 1: certKey a already exists");
        let unknown = refused(CommandError::Unknown("unknown certKey b".into()));
        assert_eq!((unknown.http_status(), unknown.exit_code()), (400, 1));
        let parse = ControlError::Parse(vec![ConfigError {
            file: "admin".into(),
            line: 2,
            reason: "unknown command 'frob'".into(),
        }]);
        assert_eq!(
            (parse.http_status(), parse.to_string().as_str()),
            (400, "admin:2: unknown command 'frob'")
        );
        assert_eq!(ControlError::AdminAddress("taken".into()).http_status(), 409);
        assert_eq!(ControlError::Tls(SnapshotError("no suites".into())).http_status(), 400);
        let shard = ControlError::ShardFailed("shard 1 did not apply generation 3".into());
        assert_eq!(
            (shard.http_status(), shard.exit_code(), shard.is_user_error()),
            (500, 70, false)
        );
        let save = ControlError::Save {
            path: "/etc/ns.conf".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!((save.http_status(), save.exit_code()), (409, 1));
        assert_eq!(save.to_string(), "cannot save to /etc/ns.conf: permission denied");
    }
}
