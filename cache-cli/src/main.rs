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
mod serve;
mod serve_config;
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

/// Prints only an event's message: access log lines are complete lines.
/// The message is written as it is formatted, without the escaping pass
/// the default field formatter makes (character by character): a line's
/// fields come from header values and a request target, which hold no
/// control characters (hyper refuses them), and the line quotes them
/// itself. Fields other than the message are not printed.
struct MessageOnly;

/// Writes the `message` field of an event.
struct WriteMessage<'a> {
    writer: tracing_subscriber::fmt::format::Writer<'a>,
    result: std::fmt::Result,
}

impl tracing::field::Visit for WriteMessage<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        // A message's `Debug` is its formatted text, unquoted.
        if field.name() == "message" {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for MessageOnly
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut message = WriteMessage {
            writer: writer.by_ref(),
            result: Ok(()),
        };
        event.record(&mut message);
        message.result?;
        writeln!(writer)
    }
}

/// Logs on stderr; with `access`, `serve`'s access log lines (target
/// `blockcache::access`) go to their own sink.
fn init_logging(
    verbose: u8,
    quiet: bool,
    access: Option<&serve_config::AccessLog>,
) -> Result<(), Failure> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // Without -v, warnings the command reports itself (damaged chunks)
    // are not logged twice.
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,cache_core::object::verify=error",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let rust_log = std::env::var("RUST_LOG").ok();
    let general = if verbose == 0 && rust_log.is_some() {
        EnvFilter::from_default_env()
    } else {
        EnvFilter::new(default)
    };
    let general = general.add_directive(
        "blockcache::access=off"
            .parse()
            .map_err(|e| Failure::usage(format!("log filter: {e}")))?,
    );
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(general);
    let access_layer = match access {
        None | Some(serve_config::AccessLog::Off) => None,
        Some(dest) => {
            // RUST_LOG directives about the access target win
            // (e.g. RUST_LOG=blockcache::access=off).
            let mut directives = "off".to_owned();
            let user: Vec<&str> = rust_log
                .as_deref()
                .unwrap_or("")
                .split(',')
                .filter(|d| d.trim().starts_with(cache_http::endpoint::access::TARGET))
                .collect();
            if user.is_empty() {
                directives.push_str(",blockcache::access=info");
            }
            for d in user {
                directives.push(',');
                directives.push_str(d);
            }
            let filter = EnvFilter::new(directives);
            let layer = tracing_subscriber::fmt::layer().event_format(MessageOnly);
            Some(match dest {
                serve_config::AccessLog::File(path) => {
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| Failure::io(format!("access log {}", path.display()), e))?;
                    // Lines are appended with one write(2) each (the
                    // layer formats a line whole first) to a file opened
                    // O_APPEND: no lock is needed for them not to mix.
                    layer
                        .with_writer(std::sync::Arc::new(file))
                        .with_filter(filter)
                        .boxed()
                }
                _ => layer
                    .with_writer(std::io::stderr)
                    .with_filter(filter)
                    .boxed(),
            })
        }
    };
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(access_layer)
        .try_init();
    Ok(())
}

fn fail(f: Failure) -> ExitCode {
    let line = f.message.replace('\n', " ");
    let _ = writeln!(std::io::stderr(), "blockcache: {line}");
    ExitCode::from(f.code)
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // `serve` reads its configuration first: it says where the access log goes.
    let serve_config = match &cli.command {
        cli::Command::Serve(a) => match serve_config::load(a) {
            Ok(c) => Some(c),
            Err(f) => return fail(f),
        },
        _ => None,
    };
    if let (cli::Command::Serve(a), Some(c)) = (&cli.command, &serve_config) {
        if a.check_config {
            serve::check_config(c);
            return ExitCode::SUCCESS;
        }
    }
    let access = serve_config.as_ref().map(|c| &c.access_log);
    if let Err(f) = init_logging(cli.global.verbose, cli.global.quiet, access) {
        return fail(f);
    }
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
    // `serve` drains on SIGTERM/SIGINT (exit 0); the others stop at once
    // and say how to resume.
    // `ls --watch` runs until Ctrl-C: that is its normal end.
    let watch = matches!(&cli.command, cli::Command::Ls(a) if a.watch);
    let result = rt.block_on(async {
        let cli = match (cli.command, serve_config) {
            (cli::Command::Serve(a), Some(c)) => return serve::run(&cli.global, *a, c).await,
            (command, _) => cli::Cli {
                global: cli.global,
                command,
            },
        };
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
        Err(f) => fail(f),
    }
}
