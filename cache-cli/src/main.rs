//! `blockcache`: the command-line front of the cache. Thin: parsing and
//! printing; the cache logic lives in `cache-core` and `cache-http`.

// clap renders these doc comments as `--help` text, where `<PATH>` is a
// placeholder for the reader, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

mod checksums;
mod cli;
mod commands;
mod demo;
mod ls;
mod origin;
mod output;
mod progress;
mod shared;
mod size;
mod upstream;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Exit codes (also listed in `--help`).
pub mod exit {
    pub const USAGE: u8 = 2;
    pub const NETWORK: u8 = 3;
    pub const VERIFICATION: u8 = 4;
    pub const LOCAL_IO: u8 = 5;
    pub const INTERRUPTED: u8 = 130;
}

/// Why a command failed: an exit code and one line for stderr.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(exit::USAGE, message)
    }

    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Failure {
        Failure::new(exit::LOCAL_IO, format!("{what}: {e}"))
    }

    /// Maps a store error to its exit code, prefixing `context` (the URL
    /// or reference it is about) unless the message names it already.
    pub fn core(context: &str, e: cache_core::Error) -> Failure {
        use cache_core::ErrorClass;
        let code = match e.class() {
            ErrorClass::Usage => exit::USAGE,
            ErrorClass::Network => exit::NETWORK,
            ErrorClass::Verification => exit::VERIFICATION,
            ErrorClass::LocalIo => exit::LOCAL_IO,
        };
        let msg = e.to_string();
        let message = if context.is_empty() || msg.contains(context) {
            msg
        } else {
            format!("{context}: {msg}")
        };
        Failure::new(code, message)
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    // Without -v, warnings the command reports itself (damaged chunks)
    // are not logged twice.
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,cache_core::object::verify=error",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = if verbose == 0 && std::env::var_os("RUST_LOG").is_some() {
        EnvFilter::from_default_env()
    } else {
        EnvFilter::new(default)
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.global.verbose, cli.global.quiet);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "blockcache: cannot start runtime: {e}");
            return ExitCode::from(exit::LOCAL_IO);
        }
    };
    // `serve` shuts down gracefully on Ctrl-C (exit 0); the others stop
    // at once and say how to resume.
    let serve = matches!(cli.command, cli::Command::Serve(_));
    // `ls --watch` runs until Ctrl-C: that is its normal end.
    let watch = matches!(&cli.command, cli::Command::Ls(a) if a.watch);
    let result = rt.block_on(async {
        if serve {
            return commands::run(cli).await;
        }
        tokio::select! {
            r = commands::run(cli) => r,
            _ = tokio::signal::ctrl_c() => if watch {
                Ok(())
            } else {
                // Erases the progress bar and says what was kept.
                Err(Failure::new(exit::INTERRUPTED, progress::interrupted()))
            },
        }
    });
    // Do not wait for fills still running in the background.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let line = f.message.replace('\n', " ");
            let _ = writeln!(std::io::stderr(), "blockcache: {line}");
            ExitCode::from(f.code)
        }
    }
}
