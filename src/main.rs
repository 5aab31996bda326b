//! `shardtls`: command-line entry point. Each subcommand lives in its module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardtls::control::admin::CtlError;

#[derive(Parser, Debug)]
#[command(
    name = "shardtls",
    version,
    about = "Thread-per-core TLS-terminating proxy with graceful, epoch-based reconfiguration"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

const CTL_EXAMPLES: &str = "Examples:
  shardtls ctl update ssl certKey site -cert /etc/shardtls/new.pem -key /etc/shardtls/new.key
  shardtls ctl \"set ssl vserver www -sessTimeout 300\"
  printf 'unbind ssl vserver www -certkeyName old\\nbind ssl vserver www -certkeyName new\\n' | shardtls ctl -f -

  shardtls ctl show stats --watch

The admin address comes from --admin, else SHARDTLS_ADMIN, else the default
socket of `run` (/run/shardtls/admin.sock for root, else
$XDG_RUNTIME_DIR/shardtls/admin.sock or /tmp/shardtls-UID/admin.sock). For a
TCP address the token comes from --admin-token-file, else from admin.token
next to the default socket, where `run` generates it.
`shardtls ctl show stats`, `shardtls ctl save ns config` and every command of
the configuration language work the same way. `show stats --watch` redraws
per-shard, per-epoch counters every second (--interval SECONDS) until Ctrl-C.";

/// `ctl --help`: the examples, then every command and flag of the language.
fn ctl_long_help() -> String {
    format!("{CTL_EXAMPLES}\n\n{}", shardtls::config::help_text())
}

/// Log filter unless SHARDTLS_LOG says otherwise. rustls logs a warning per
/// odd ClientHello (an IP address as SNI, as wrk sends): peers choose those,
/// so only its errors are shown by default.
const DEFAULT_LOG_FILTER: &str = "info,rustls=error";

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the configuration in FILE. SIGTERM drains and exits; SIGHUP re-reads FILE.
    Run {
        /// Configuration file (ADC command language).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Number of shards (one executor pinned per core). Default: every core this process may use.
        #[arg(long)]
        shards: Option<usize>,
        /// Admin API: a Unix socket path (created 0600), or a loopback host:port (a bearer
        /// token is then required). [default: /run/shardtls/admin.sock for root, else
        /// $XDG_RUNTIME_DIR/shardtls/admin.sock or /tmp/shardtls-UID/admin.sock, in a 0700 folder]
        #[arg(long, env = "SHARDTLS_ADMIN")]
        admin: Option<String>,
        /// Require `Authorization: Bearer TOKEN` on the admin API; TOKEN is read from this
        /// file (mode 0600). Over TCP without it, a token is generated into admin.token
        /// next to the default socket.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Accept a token file that group or others may read.
        #[arg(long, requires = "admin_token_file")]
        admin_token_file_insecure: bool,
        /// Let the admin API listen on a TCP address that is not loopback (needs
        /// --admin-token-file too; plain HTTP: reach it through a TLS tunnel only).
        #[arg(long)]
        admin_allow_remote: bool,
        /// When a shard has nothing to run, how long it may wait for more than one
        /// completion before it wakes for fewer (microseconds; 0 wakes on the first).
        /// Fewer wake-ups per request at the cost of at most this much latency per hop.
        #[arg(long, default_value_t = shardtls::control::DEFAULT_BATCH_WAIT_US, value_parser = clap::value_parser!(u32).range(0..=1000))]
        batch_wait_us: u32,
        /// A folder that certificate and key paths given at run time (admin API, ctl)
        /// may also lie in, besides the config file's folder (repeatable). Paths in
        /// the config file itself may be anywhere.
        #[arg(long = "allow-dir", value_name = "DIR")]
        allow_dirs: Vec<PathBuf>,
        /// Load private keys that group or others can read, or that another user
        /// owns, with a warning instead of refusing them.
        #[arg(long)]
        allow_insecure_key_mode: bool,
        /// Let the process be dumped on a crash (and traced by its user), for
        /// debugging; by default it is not, so no key material reaches a core file.
        #[arg(long)]
        allow_core_dumps: bool,
        /// Write one line per client connection when it ends to PATH (`-`: standard
        /// output). SIGUSR1 reopens PATH (logrotate). Off by default.
        #[arg(long, value_name = "PATH|-")]
        access_log: Option<String>,
        /// Lines of --access-log: `plain` (key=value, fixed order) or `json`.
        #[arg(long, value_enum, default_value_t = shardtls::access_log::Format::Plain, requires = "access_log")]
        access_log_format: shardtls::access_log::Format,
    },
    /// Validate FILE as `run` would, without serving; prints FILE:LINE: reason for each error.
    Check {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// As for `run`: the admin API's address, which no vserver may share.
        #[arg(long, env = "SHARDTLS_ADMIN")]
        admin: Option<String>,
        /// As for `run`: accept private keys others can read, with a warning.
        #[arg(long)]
        allow_insecure_key_mode: bool,
    },
    /// Send one command (or a batch with -f) to a running proxy's admin API.
    #[command(after_help = CTL_EXAMPLES, after_long_help = ctl_long_help())]
    Ctl {
        /// Admin API address (host:port) or Unix socket path [default: as `run`'s].
        #[arg(long, env = "SHARDTLS_ADMIN")]
        admin: Option<String>,
        /// Bearer token file, when the proxy requires one [default over TCP: admin.token
        /// next to the default socket, if there is one].
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Send the commands in FILE (`-` for standard input) as one transaction.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// With `show stats`: redraw per-shard, per-epoch counters until Ctrl-C
        /// (may also follow the command: `ctl show stats --watch`).
        #[arg(short = 'w', long)]
        watch: bool,
        /// Seconds between two redraws of --watch [default: 1].
        #[arg(long, value_name = "SECONDS", value_parser = shardtls::control::watch::parse_interval)]
        interval: Option<std::time::Duration>,
        /// The command, as words (`update ssl certKey site -cert new.pem`) or as
        /// one quoted line. Its own `-flags` pass through untouched; options of
        /// `ctl` itself go before it.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run an embedded demo: throwaway CA, back end and proxy on loopback, real traffic, live rotations.
    Demo {
        /// Print the raw `/stats` JSON instead of the per-epoch table: alone on standard
        /// output, the story on standard error (`shardtls demo --json | jq`).
        #[arg(long)]
        json: bool,
        /// Instead of running the demo, write the throwaway certificates and key
        /// that examples/shardtls.conf names into DIR (examples/certs for it), then exit.
        #[arg(long, value_name = "DIR")]
        write_example_certs: Option<PathBuf>,
    },
    /// Load generator and benchmark scenarios.
    Bench(Box<shardtls::bench::BenchArgs>),
    /// Built-in test server (echo, sink or fixed HTTP response; plain or TLS)
    /// to stand behind the proxy in tests, demos and benchmarks.
    #[command(alias = "backend")]
    TestServer(shardtls::test_server::TestServerArgs),
}

fn check(config: &std::path::Path, admin: Option<&str>, allow_insecure_key_mode: bool) -> ExitCode {
    use shardtls::control::runtime::{validate, ControlError};
    // The host, as `run` will need it: a ring and its provided buffers.
    if let Err(e) = shardtls::rt::probe() {
        eprintln!("shardtls: {e}");
        return ExitCode::FAILURE;
    }
    let files = shardtls::config::DirFileSource::new(shardtls::config::config_dir(config))
        .allow_insecure_key_mode(allow_insecure_key_mode);
    match validate(config, &files, admin) {
        Ok(v) => {
            let m = &v.model;
            println!(
                "{}: OK ({} certKeys, {} vservers, {} services, {} serviceGroups)",
                config.display(),
                m.certkeys.len(),
                m.vservers.len(),
                m.services.len(),
                m.service_groups.len()
            );
            ExitCode::SUCCESS
        }
        Err(ControlError::Load(errs)) => {
            for e in errs {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}: {e}", config.display());
            ExitCode::FAILURE
        }
    }
}

/// What `shardtls ctl` was given besides the admin address and token.
struct CtlArgs {
    file: Option<PathBuf>,
    watch: bool,
    interval: Option<std::time::Duration>,
    words: Vec<String>,
}

fn ctl(admin: &str, token: Option<String>, args: CtlArgs) -> Result<(), Box<dyn std::error::Error>> {
    use shardtls::control::watch;
    let CtlArgs {
        file,
        watch,
        interval,
        words,
    } = args;
    let typed = watch::take_watch_flags(words)?;
    let words = typed.words;
    if watch || typed.watch {
        let show_stats = words.len() == 2 && words.iter().map(|w| w.to_ascii_lowercase()).eq(["show", "stats"]);
        if file.is_some() || !show_stats {
            return Err("--watch goes with `show stats` only (shardtls ctl show stats --watch)".into());
        }
        let interval = typed.interval.or(interval).unwrap_or(watch::DEFAULT_INTERVAL);
        return Ok(watch::run(admin, token.as_deref(), interval)?);
    }
    let body = match file {
        Some(f) if f.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            text
        }
        Some(f) => std::fs::read_to_string(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?,
        None if words.is_empty() => return Err("give a command, or -f FILE (see shardtls ctl --help)".into()),
        // One word holding a whole line: `ctl "set ssl vserver v -sessTimeout 300"`.
        None if words.len() == 1 => words[0].clone(),
        None => words
            .iter()
            .map(|w| {
                if w.contains(char::is_whitespace) {
                    format!("\"{w}\"")
                } else {
                    w.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    };
    let (method, path, body) = match body.trim() {
        "stats" | "GET /stats" => ("GET", "/stats", String::new()),
        "metrics" | "GET /metrics" => ("GET", "/metrics", String::new()),
        _ => ("POST", "/cmd", body),
    };
    let (status, reply) = shardtls::control::admin::client_request_status(admin, method, path, &body, token.as_deref())
        .map_err(CtlError::Unreachable)?;
    // The reply's warnings go to standard error, after the rest.
    let (warnings, rest): (Vec<&str>, Vec<&str>) =
        reply.split_inclusive('\n').partition(|l| l.starts_with("warning: "));
    print!("{}", rest.concat());
    eprint!("{}", warnings.concat());
    match status {
        200 => Ok(()),
        _ => Err(CtlError::from_status(status).into()),
    }
}

/// Exit status for `e`: 1 for the user's mistake, 70 for a fault.
fn exit_code(e: &(dyn std::error::Error + 'static)) -> u8 {
    use shardtls::control::runtime::ControlError;
    if let Some(c) = e.downcast_ref::<ControlError>() {
        return c.exit_code();
    }
    e.downcast_ref::<CtlError>().map_or(1, CtlError::exit_code)
}

/// The log writer thread's guard: dropping it writes out the lines queued.
static LOG_GUARD: std::sync::Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> = std::sync::Mutex::new(None);

/// Write out the queued log lines (on the way out, fail-stop included).
fn flush_logs() {
    let guard = LOG_GUARD.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(guard);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Log lines go through a writer thread: a shard never blocks on a slow
    // stderr (a full pipe, a slow journal); under a flood lines are dropped
    // rather than stalling traffic. The guard flushes on the way out.
    let (log_writer, log_guard) = tracing_appender::non_blocking(std::io::stderr());
    *LOG_GUARD.lock().unwrap_or_else(|e| e.into_inner()) = Some(log_guard);
    shardtls::rt::before_fail_stop(flush_logs);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHARDTLS_LOG").unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(log_writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.cmd {
        Cmd::Run {
            config,
            shards,
            admin,
            admin_token_file,
            admin_token_file_insecure,
            admin_allow_remote,
            batch_wait_us,
            allow_dirs,
            allow_insecure_key_mode,
            allow_core_dumps,
            access_log,
            access_log_format,
        } => shardtls::control::set_core_dumps(allow_core_dumps)
            .map_err(|e| format!("cannot set whether core dumps are allowed: {e}"))
            .map_err(Into::into)
            .and_then(|()| {
                shardtls::control::run(shardtls::control::RunOptions {
                    config,
                    shards,
                    admin: shardtls::control::access::AdminOptions {
                        endpoint: admin,
                        token_file: admin_token_file,
                        token_file_insecure: admin_token_file_insecure,
                        allow_remote: admin_allow_remote,
                    },
                    batch_wait_us,
                    files: shardtls::control::FileRules {
                        allow_dirs,
                        allow_insecure_key_mode,
                    },
                    access_log: access_log.map(|p| (shardtls::access_log::Target::parse(&p), access_log_format)),
                })
                .map_err(Into::into)
            }),
        Cmd::Check {
            config,
            admin,
            allow_insecure_key_mode,
        } => {
            let code = check(&config, admin.as_deref(), allow_insecure_key_mode);
            flush_logs();
            return code;
        }
        Cmd::Ctl {
            admin,
            admin_token_file,
            file,
            watch,
            interval,
            command,
        } => shardtls::control::access::client_target(admin.as_deref(), admin_token_file.as_deref())
            .map_err(Into::into)
            .and_then(|(admin, token)| {
                let args = CtlArgs {
                    file,
                    watch,
                    interval,
                    words: command,
                };
                ctl(&admin, token, args)
            }),
        Cmd::Demo {
            write_example_certs: Some(dir),
            ..
        } => shardtls::demo::write_example_certs(&dir).map(|written| {
            for p in written {
                println!("wrote {}", p.display());
            }
        }),
        Cmd::Demo { json, .. } => shardtls::demo::main(json),
        Cmd::Bench(a) => shardtls::bench::main(*a),
        Cmd::TestServer(a) => shardtls::test_server::main(a),
    };
    flush_logs();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardtls: {e}");
            // 70 when a shard stalled or died (the status systemd restarts
            // on) or another fault of the proxy; 1 for a mistake.
            ExitCode::from(exit_code(e.as_ref()))
        }
    }
}
