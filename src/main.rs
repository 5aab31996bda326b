//! `shardtls`: command-line entry point. Each subcommand lives in its module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "shardtls", version, about = "Thread-per-core TLS-terminating proxy with graceful, epoch-based reconfiguration")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

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
        /// Admin API address (host:port) or Unix socket path.
        #[arg(long, default_value = "127.0.0.1:9900")]
        admin: String,
    },
    /// Validate FILE without serving; prints FILE:LINE: reason for each error.
    Check {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Send one command (or a batch with -f) to a running proxy's admin API.
    Ctl {
        #[arg(long, default_value = "127.0.0.1:9900")]
        admin: String,
        /// Send the commands in FILE as one transaction.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// The command, e.g. `show stats` or `set ssl vserver v1 -tls12 DISABLED`.
        command: Vec<String>,
    },
    /// Run an embedded demo: throwaway CA, back end and proxy on loopback, real traffic, live rotations.
    Demo,
    /// Load generator and benchmark scenarios.
    Bench(shardtls::bench::BenchArgs),
    /// Built-in back end for tests and benchmarks.
    Backend(shardtls::origin::OriginArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.cmd {
        Cmd::Bench(a) => shardtls::bench::main(a),
        Cmd::Backend(a) => shardtls::origin::main(a),
        other => Err(format!("not built yet: {other:?}").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardtls: {e}");
            ExitCode::FAILURE
        }
    }
}
