//! `blockcache serve` as a daemon: listen addresses as people write them,
//! systemd readiness and socket activation, signals (drain on
//! SIGTERM/SIGINT, reload on SIGHUP), the access log sink.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use cache_core::{FetchOptions, FillOptions};
use cache_http::endpoint::{
    AccessLogFormat, Endpoint, EndpointConfig, EndpointError, Listener, MirrorConfig,
    MirrorSourceFactory, ServeTier,
};
use cache_http::HttpSourceConfig;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{self, ServeArgs};
use crate::commands::{http_config, open_store, source_failure};
use crate::serve_config::{Mirror, ServeConfig};
use crate::{exit, Failure};

/// `serve --check-config`: prints the effective configuration.
pub fn check_config(config: &ServeConfig) {
    match &config.file {
        Some(f) => println!("# effective configuration: {} and flags", f.display()),
        None => println!("# effective configuration: flags and defaults (no config file)"),
    }
    print!("{}", config.render());
}

/// Binds one `--listen` value: `HOST:PORT` (every address HOST resolves
/// to), `:PORT` (all interfaces), `[::1]:PORT`, `unix:PATH`.
fn bind(spec: &str) -> Result<Vec<Listener>, Failure> {
    let io =
        |e: std::io::Error| Failure::new(exit::LOCAL_IO, format!("cannot listen on {spec}: {e}"));
    if let Some(path) = spec.strip_prefix("unix:") {
        let path = Path::new(path);
        remove_stale_socket(path);
        let l = std::os::unix::net::UnixListener::bind(path).map_err(io)?;
        return Ok(vec![Listener::Unix(l)]);
    }
    if let Some(port) = spec.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| Failure::usage(format!("--listen {spec:?}: bad port")))?;
        tracing::warn!(
            "listening on all interfaces (port {port}): the cache is reachable from the network"
        );
        // [::] accepts IPv4 too (dual stack); without IPv6, 0.0.0.0.
        let l = std::net::TcpListener::bind(SocketAddr::from(([0u16; 8], port)))
            .or_else(|_| std::net::TcpListener::bind(SocketAddr::from(([0u8; 4], port))))
            .map_err(io)?;
        return Ok(vec![Listener::Tcp(l)]);
    }
    let addrs: Vec<SocketAddr> = match spec.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => spec
            .to_socket_addrs()
            .map_err(|e| Failure::usage(format!("--listen {spec:?}: {e}")))?
            .collect(),
    };
    let mut out = Vec::new();
    let mut last = None;
    for a in addrs {
        if a.ip().is_unspecified() {
            tracing::warn!("listening on {a}: the cache is reachable from the network");
        }
        match std::net::TcpListener::bind(a) {
            Ok(l) => out.push(Listener::Tcp(l)),
            // `localhost` may resolve to ::1 on a host without IPv6.
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                tracing::warn!(addr = %a, "skipped: {e}");
                last = Some(e);
            }
            Err(e) => return Err(io(e)),
        }
    }
    if out.is_empty() {
        return Err(io(
            last.unwrap_or_else(|| std::io::Error::other("no address"))
        ));
    }
    Ok(out)
}

/// A socket file left by a process that is gone blocks `bind`; a socket
/// someone still listens on is left alone (bind then fails clearly).
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// Listeners handed over by systemd (`LISTEN_FDS`), if any.
fn inherited() -> Result<Vec<Listener>, Failure> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        let bad = |e: std::io::Error| {
            Failure::new(
                exit::LOCAL_IO,
                format!("socket activation: fd {}: {e}", 3 + i),
            )
        };
        match fds.take_tcp_listener(i) {
            Ok(Some(l)) => out.push(Listener::Tcp(l)),
            Ok(None) => {}
            Err(_) => {
                if let Some(l) = fds.take_unix_listener(i).map_err(bad)? {
                    out.push(Listener::Unix(l));
                }
            }
        }
    }
    Ok(out)
}

/// The HTTP source factory of `config` (one client, shared by its sources).
fn source_factory(config: HttpSourceConfig) -> Result<MirrorSourceFactory, Failure> {
    cache_http::source_factory(config).map_err(source_failure)
}

fn endpoint_mirrors(
    mirrors: &[Mirror],
    base: &HttpSourceConfig,
) -> Result<Vec<MirrorConfig>, Failure> {
    mirrors
        .iter()
        .map(|m| {
            let mut c = MirrorConfig::new(m.name.clone(), m.url.clone());
            c.fill = m.fill;
            c.pass_query = m.pass_query;
            c.revalidate = m.revalidate;
            if !m.headers.is_empty() || m.cacert.is_some() {
                let mut http = base.clone();
                http.headers = m
                    .headers
                    .iter()
                    .map(|(n, v, _)| (n.clone(), v.clone()))
                    .collect();
                http.extra_ca = m.cacert.clone().or(http.extra_ca);
                c.source_factory = Some(source_factory(http).map_err(|f| {
                    Failure::new(f.code, format!("mirror {:?}: {}", m.name, f.message))
                })?);
            }
            Ok(c)
        })
        .collect()
}

/// `wanted` connections, if the descriptor limit allows them: raises the
/// soft `RLIMIT_NOFILE` to the hard limit (like Go's runtime does), and
/// keeps 256 descriptors for everything else (origin connections, data
/// and index files, the listeners); a lower limit lowers the connection
/// limit, with a warning, rather than failing accepts with EMFILE.
fn connection_limit(wanted: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a plain struct.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return wanted;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    };
    let fits = usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(256)
        .max(16);
    if wanted > fits {
        tracing::warn!(
            wanted,
            serving = fits,
            nofile = soft,
            "the open-file limit (ulimit -n) allows fewer connections than max_connections"
        );
        return fits;
    }
    wanted
}

/// Runs `serve` until a signal ends it.
pub async fn run(g: &cli::Global, a: ServeArgs, config: ServeConfig) -> Result<(), Failure> {
    let mut g_store = cli::Global {
        store: g.store.clone(),
        verbose: g.verbose,
        quiet: g.quiet,
    };
    if g_store.store.is_none() {
        g_store.store = config.store.clone();
    }
    let store = open_store(&g_store, Some(&a.http))?;
    let http = http_config(Some(&a.http));
    let mut listeners = inherited()?;
    if listeners.is_empty() {
        for spec in &config.listen {
            listeners.extend(bind(spec)?);
        }
    } else {
        tracing::info!(
            n = listeners.len(),
            "using the sockets systemd passed (LISTEN_FDS)"
        );
    }
    let shared = crate::shared::open_url(
        config.shared.as_deref(),
        config.shared_lease,
        config.shared_timeout,
    )?
    .map(|t| Arc::new(crate::shared::ServeShared(t)) as Arc<dyn ServeTier>);
    let defaults = EndpointConfig::default();
    let endpoint_config = EndpointConfig {
        mirrors: endpoint_mirrors(&config.mirrors, &http)?,
        source_factory: Some(source_factory(http.clone())?),
        parents: config.parents.clone(),
        shared,
        revalidate: config.revalidate,
        fetch: FetchOptions {
            fill: FillOptions {
                connections: usize::from(a.http.connections),
                ..FillOptions::default()
            },
            ..FetchOptions::default()
        },
        shutdown_grace: config.drain_timeout,
        max_connections: connection_limit(config.max_connections),
        connection_threads: config.threads,
        max_size: config.max_size,
        access_log: if config.json_log {
            AccessLogFormat::Json
        } else {
            AccessLogFormat::Combined
        },
        ..defaults
    };
    let bound =
        Endpoint::with_listeners(store, endpoint_config, listeners).map_err(|e| match e {
            EndpointError::Bind { .. } => Failure::new(exit::LOCAL_IO, e.to_string()),
            e => Failure::usage(e.to_string()),
        })?;
    for addr in bound.addresses() {
        // The address on stdout (the port is real when --listen asked for 0).
        println!("listening on {addr}");
    }
    if !g.quiet {
        // Unix socket paths are shown as they are (curl --unix-socket).
        let first = bound.addresses().first().cloned().unwrap_or_default();
        eprintln!("status page at {first} (JSON at /status, metrics at /metrics)");
        if first.starts_with("http") {
            eprintln!("objects at {first}blobs/<BLAKE3>");
        } else {
            eprintln!("objects at /blobs/<BLAKE3> on {first}");
        }
        for m in &config.mirrors {
            eprintln!("mirror /m/{}/ -> {}", m.name, m.url);
        }
        if let Some(s) = &config.shared {
            eprintln!("shared tier {s}: asked after the parents, published to in the background");
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Failure::io("SIGTERM handler", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Failure::io("SIGINT handler", e))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| Failure::io("SIGHUP handler", e))?;
    let reloader = bound.reloader();
    let shutdown = async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                    match crate::serve_config::load(&a) {
                        Ok(new) => match endpoint_mirrors(&new.mirrors, &http)
                            .map_err(|f| f.message)
                            .and_then(|m| reloader.set_mirrors(m).map_err(|e| e.to_string()))
                        {
                            Ok(()) => tracing::warn!(
                                mirrors = new.mirrors.len(),
                                "reloaded the configuration (mirrors)"
                            ),
                            Err(e) => tracing::error!("reload refused, the old mirrors stay: {e}"),
                        },
                        Err(f) => tracing::error!("reload refused, the old mirrors stay: {}", f.message),
                    }
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                }
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::warn!("stopping: a second signal exits at once");
        // A second signal: exit now. Chunks already committed are durable;
        // the rest is fetched again on the next request.
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            eprintln!("blockcache: second signal: exiting without waiting for responses");
            std::process::exit(i32::from(exit::INTERRUPTED));
        });
    };
    let shown = bound.addresses().join(", ");
    bound
        .serve(shutdown)
        .await
        .map_err(|e| Failure::io(format!("serve on {shown}"), e))
}
