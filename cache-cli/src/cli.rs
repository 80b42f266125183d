//! Command-line syntax (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::size::{parse_rate, parse_size};

/// The exit codes, in one line, for every subcommand's help.
macro_rules! exit_line {
    () => {
        "\n\nExit codes: 0 ok, 2 usage, 3 network/origin, 4 verification, 5 local I/O, 130 interrupted."
    };
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  2  usage: bad arguments, unknown or ambiguous reference
  3  network or origin failure (after retries)
  4  verification failure: digest mismatch (BLAKE3, SHA-256, SHA-512), damaged
     chunks, source changed
  5  local I/O failure (disk, store, object busy)
  130 interrupted (Ctrl-C); run the same command again to resume

SIZE: a number with an optional unit: 1048576, 64KiB, 1M (=MiB), 2G, 10MB
(=10^7). RATE: a SIZE per second, e.g. 10MB/s, 200M.

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) or use -v/-vv.";

/// blockcache: a content-addressed download cache for big disk images.
///
/// Downloads each image once however many consumers ask for it (in one
/// process or several), serves it while it downloads, resumes after any
/// interruption with Range requests, and verifies every byte with BLAKE3.
#[derive(Debug, Parser)]
#[command(name = "blockcache", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Store directory [default: $XDG_CACHE_HOME/blockcache, else
    /// $HOME/.cache/blockcache]
    #[arg(long, global = true, env = "BLOCKCACHE_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress output; only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download URL into the store (once, resumably) and print its BLAKE3
    #[command(after_help = concat!("\
The last line on stdout is the object's BLAKE3 hex (what b3sum prints).
With -o -, stdout carries the bytes instead and the hash goes to stderr.
An interrupted fetch resumes where it stopped when run again. A fetch of a URL
another process is already downloading follows that download (and takes it
over if that process dies) instead of downloading it again.

Examples:
  blockcache fetch https://example.com/images/disk.qcow2
  blockcache fetch https://example.com/disk.raw -o disk.raw --limit-rate 50MB/s
  blockcache fetch https://example.com/disk.raw -o - | qemu-img dd ...
  blockcache fetch https://example.com/disk.raw --blake3 6f1c...e2
  blockcache fetch https://example.com/disk.iso --sha256 9a3f...01
  blockcache fetch https://example.com/disk.iso --checksum sha512=77c1...9e
  blockcache fetch https://example.com/disk.iso --checksums-file https://example.com/SHA256SUMS
  blockcache fetch https://example.com/disk.raw --parent http://cache.lan:8472/

An expected digest (--blake3, --sha256, --checksum, --checksums-file) is
checked when the download completes: a mismatch exits 4 naming both values and
keeps the object under its URL and real hash. When the store already has a
complete object with that digest, it is used without asking the origin
(unless --revalidate).

Private and signed origins (secrets never reach the store, logs or messages):
  blockcache fetch https://example.com/p/disk.raw -H \"Authorization: Bearer $TOKEN\"
  blockcache fetch https://example.com/p/disk.raw --user alice:s3cret
  blockcache fetch https://example.com/p/disk.raw --netrc-file ~/.netrc-images
  blockcache fetch --ignore-query 'https://bucket.s3.amazonaws.com/disk.raw?X-Amz-Signature=...'
  blockcache fetch https://lab.internal/disk.raw --cacert lab-ca.pem
  blockcache fetch https://example.com/disk.raw --retry 20 --connect-timeout 5s
Certificate errors, HTTP 4xx (but 408/429), unknown hosts and refused
connections (twice) fail at once with a hint (exit 3).

Parents (--parent, or BLOCKCACHE_PARENTS=URL,URL) are other blockcaches
(`blockcache serve`), asked in order before the origin. With --blake3 a parent
that has the object complete sends its manifest, and every chunk is checked
against it before it is stored: a wrong chunk is refused and fetched from the
next source. Without --blake3 a parent serves the URL only through one of its
mirrors and only in the version the origin serves now (same validator); its
chunks are then checked only by the final hash. A parent that is down,
stalls or lies is dropped for this fetch; the origin is always last.

Shared S3 tier (--shared s3://BUCKET[/PREFIX], or BLOCKCACHE_SHARED):
  AWS_ENDPOINT_URL=http://s3.lan:8333 AWS_ALLOW_HTTP=true \\
    blockcache fetch https://example.com/disk.raw --shared s3://images/fleet
The bucket is asked after the parents and before the origin: b3/<BLAKE3> (by
--blake3, or through the pointer src/<id> for this URL and version). Its
manifest must merge to the name and every chunk is checked before it is
stored. When the bucket lacks the image, one node takes the lease
lease/<id> and downloads it from the origin while the others wait for it; a
completed fetch publishes the object, its manifest and the pointer before it
exits. Any bucket error falls back to the next source and never fails the
fetch.", exit_line!()))]
    Fetch(Box<FetchArgs>),
    /// Serve the store over HTTP (Range requests, partial objects included)
    #[command(after_help = concat!("\
Routes: GET|HEAD /blobs/<BLAKE3 hex> and /blobs/sha256/<hex> (complete
objects in the store; responses carry Repr-Digest with the known SHA-256 and
SHA-512), GET|HEAD /blobs/<BLAKE3 hex>/manifest (chunk hashes of a complete
object), GET|HEAD /m/<NAME>/<PATH> (pull-through mirror: URL/<PATH> is
fetched into the store on first use), GET|HEAD /u?url=<URL> (for child caches'
--parent: a URL under a mirror, anything else 403), / (live status page with
each object's chunk map), /events (its server-sent events), /status (JSON),
/metrics (Prometheus). Range requests of parts not downloaded yet wait for
them, and those parts are fetched first (a lazy mirror fetches only those,
plus read-ahead). HEAD never starts a download. The listen addresses are
printed on stdout.

Config file: --config FILE (TOML), default $XDG_CONFIG_HOME/blockcache/config.toml
when it exists; flags override it. See contrib/blockcache.toml.

Signals: SIGTERM or SIGINT stops accepting and lets running responses end
(--drain-timeout), then exits 0; a second one exits at once. SIGHUP reloads
the mirrors of the config file without dropping connections.

systemd: Type=notify readiness and socket activation (LISTEN_FDS) work as
is; see contrib/blockcache.service and contrib/blockcache.socket.

Shared S3 tier (--shared s3://BUCKET[/PREFIX], BLOCKCACHE_SHARED, or
`shared` in the config file; AWS_* variables as for fetch): a mirror fill
asks the store, the parents, the bucket, then the origin, and publishes the
image in the background once its hash is verified. A request never waits
for another node's lease: it claims a free one, else fills from the origin.

Access log: one line per request on stderr (or --access-log FILE), target
blockcache::access (RUST_LOG=blockcache::access=off silences it).

Examples:
  blockcache serve
  blockcache serve --listen localhost:8472 --mirror images=https://example.com/images/
  blockcache serve --mirror images=https://example.com/images/ --parent http://cache.lan:8472/
  blockcache serve --mirror images=https://example.com/images/ --shared s3://images/fleet
  blockcache serve --config /etc/blockcache/config.toml --check-config
  blockcache serve --listen unix:/run/blockcache.sock --max-size 50G
  curl -r 0-1023 http://127.0.0.1:8472/m/images/disk.qcow2 | xxd | head", exit_line!()))]
    Serve(Box<ServeArgs>),
    /// List objects: reference, state, progress, length, source
    #[command(after_help = concat!("\
REF is what cat, verify and rm accept: the first 16 hex digits of the BLAKE3
when the object is complete, else its object key. --watch redraws the table
every second with each object's download rate (Ctrl-C stops it).

Examples:
  blockcache ls
  blockcache ls --watch
  blockcache ls --json | jq '.[] | select(.state == \"complete\") | .blake3'
  blockcache ls --json | jq -r '.[].digests.sha256 // empty'    # SHA-256 of complete objects", exit_line!()))]
    Ls(LsArgs),
    /// Write an object's bytes (or a range) to stdout, waiting for missing ones
    #[command(after_help = concat!("\
REF is a BLAKE3 hex hash, a unique prefix of one (at least 4 digits),
sha256:HEX (or a unique prefix of at least 8 digits; sha512: likewise), an
object key, or a source URL (a URL not in the store yet is fetched). Bytes
not downloaded yet are fetched first, then written.

Examples:
  blockcache cat 6f1c > disk.raw
  blockcache cat https://example.com/disk.raw --range 0-511 | xxd | head
  blockcache cat 6f1c --range -1048576 | wc -c     # the last MiB
  blockcache cat 6f1c --force --range 0-63         # binary to the terminal anyway", exit_line!()))]
    Cat(CatArgs),
    /// Re-hash stored chunks; report damaged ones, --repair refetches them
    #[command(after_help = concat!("\
Without REF every object is verified. Exit code 4 when damage was found and
not repaired.

Examples:
  blockcache verify
  blockcache verify 6f1c --repair", exit_line!()))]
    Verify(VerifyArgs),
    /// Remove an object from the store
    #[command(after_help = concat!("\
Prints the URL and BLAKE3 (or key) of what it removed. Fails (exit 5) while
the object is being downloaded or read.

Example:
  blockcache rm 6f1c", exit_line!()))]
    Rm(RmArgs),
    /// Evict least recently used complete objects down to a size
    #[command(after_help = concat!("\
Partial downloads of an upstream version that has since been replaced go
first (they can never resume); then complete objects, least recently used
first. Objects being downloaded or read (by any process) are never evicted.
Without --max-size nothing is evicted: gc reports the store's size. Every
evicted object is printed with its URL and BLAKE3 (or key); --dry-run prints
what would go and removes nothing.

Examples:
  blockcache gc --max-size 50G --dry-run
  blockcache gc --max-size 50G", exit_line!()))]
    Gc(GcArgs),
    /// Copy a local file into the store and print its BLAKE3
    #[command(after_help = concat!("\
Example:
  blockcache import ./disk.raw", exit_line!()))]
    Import(ImportArgs),
    /// Write a complete object's manifest (its chunk hashes) to a file or stdout
    #[command(after_help = concat!("\
The manifest lists the BLAKE3 chaining value of every chunk; they merge to the
object's BLAKE3, so whoever knows that hash can check each chunk on its own
(the binary format is documented in cache-core's manifest module). The same
bytes are served at /blobs/<BLAKE3>/manifest. Only complete objects have one.
Without -o the bytes go to stdout (refused when stdout is a terminal).

Examples:
  blockcache manifest 6f1c -o disk.manifest
  blockcache manifest https://example.com/disk.raw | wc -c", exit_line!()))]
    Manifest(ManifestArgs),
    /// Show the whole thing working, offline, on a generated image
    #[command(after_help = concat!("\
Starts a local origin serving a generated image (bytes computed on the fly,
not stored) throttled to a WAN-like rate, then fetches it from two processes
at once while reading its far end. Checks that the origin sent the image
once, that the far read returned before the download ended, and that the
BLAKE3 matches one computed independently from the generator. Uses a
temporary store unless --store (or BLOCKCACHE_STORE) is given.

Examples:
  blockcache demo
  blockcache demo --size 256M --rate 50MB/s", exit_line!()))]
    Demo(DemoArgs),
    /// Print a shell completion script (bash, zsh or fish) to stdout
    #[command(after_help = concat!("\
Examples:
  blockcache completions bash > ~/.local/share/bash-completion/completions/blockcache
  blockcache completions zsh > ~/.zfunc/_blockcache      # fpath+=(~/.zfunc)
  blockcache completions fish > ~/.config/fish/completions/blockcache.fish", exit_line!()))]
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout
    #[command(after_help = concat!("\
Examples:
  blockcache man | man -l -
  blockcache man > ~/.local/share/man/man1/blockcache.1", exit_line!()))]
    Man,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Range requests kept in flight (more reach a far origin's full speed
    /// when each connection is rate-limited). A fast origin (≥ 100 MB/s
    /// per request: this host, a fast LAN) gets one per CPU core (at
    /// least 2), where more would only compete for the CPU; the rest open
    /// as soon as 50 ms of the download are slower than that. From 2 on,
    /// each request's successor starts on another connection as it ends,
    /// so up to twice as many connections are open for a moment
    #[arg(long, value_name = "N", default_value_t = cache_core::DEFAULT_CONNECTIONS as u16, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,
    /// Bandwidth limit for this download (RATE, e.g. 10MB/s)
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub limit_rate: Option<u64>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// http:// or https:// URL of the image
    pub url: String,
    /// Also write the object to PATH (reflinked when possible); `-` streams
    /// it to stdout while it downloads
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub expect: ExpectArgs,
    /// Chunk size of a new object (power of two, 64KiB..64MiB)
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub chunk_size: u64,
    #[command(flatten)]
    pub parents: ParentArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    // After the untitled groups: its heading applies to what follows,
    // up to the next heading (OriginArgs's).
    #[command(flatten)]
    pub shared: SharedArgs,
    #[command(flatten)]
    pub origin: OriginArgs,
}

/// The shared S3 tier (issue 12 section 3; `cache-s3`).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Shared S3 tier")]
pub struct SharedArgs {
    /// An S3 bucket the fleet shares, asked after the parents and before
    /// the origin; a completed fetch (or mirror fill of `serve`) publishes
    /// there. Configured with the
    /// AWS_* variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP)
    #[arg(long, value_name = "s3://BUCKET[/PREFIX]", env = "BLOCKCACHE_SHARED")]
    pub shared: Option<String>,
    /// How long the lease of a node downloading an image for the fleet
    /// lasts without renewal (the others take over after it) [default: 60s]
    #[arg(long, value_name = "DUR", env = "BLOCKCACHE_SHARED_LEASE", value_parser = crate::upstream::parse_duration)]
    pub shared_lease: Option<std::time::Duration>,
    /// How long the bucket may leave a request unanswered (a HEAD, a
    /// pointer or lease read or write) before it counts as down and the
    /// next source is asked; a request that carries bytes gets a second
    /// more per MB. After one went unanswered, the bucket is not asked for
    /// three times as long [default: 20s]
    #[arg(long, value_name = "DUR", env = "BLOCKCACHE_SHARED_TIMEOUT", value_parser = crate::upstream::parse_duration)]
    pub shared_timeout: Option<std::time::Duration>,
}

/// Private and signed origins (issue 9): credentials, TLS trust, retries.
/// Turned into an `HttpSourceConfig` by `upstream::config`.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Private and signed origins")]
pub struct OriginArgs {
    /// Send this request header (repeatable); its value is kept secret
    /// (never stored or logged) and a redirect to another host drops
    /// Authorization and Cookie
    #[arg(short = 'H', long, value_name = "'Name: value'")]
    pub header: Vec<String>,
    /// HTTP Basic credentials; without `:PASSWORD` the password is empty
    /// (no prompt)
    #[arg(short, long, value_name = "USER[:PASSWORD]")]
    pub user: Option<String>,
    /// Take credentials for the URL's host from ~/.netrc (curl's rules,
    /// `default` included)
    #[arg(long)]
    pub netrc: bool,
    /// Like --netrc, from FILE
    #[arg(long, value_name = "FILE", conflicts_with = "netrc")]
    pub netrc_file: Option<PathBuf>,
    /// The object's identity is the URL without its query string, so a
    /// re-signed (presigned) URL resumes the same download
    #[arg(long)]
    pub ignore_query: bool,
    /// Also trust the CA certificate(s) in FILE (PEM)
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Retries of a failing request (network errors, 5xx, 408, 429) [default: 8]
    #[arg(long, value_name = "N")]
    pub retry: Option<u32>,
    /// TCP connect time-out (DUR: 10, 2.5s, 500ms, 1m) [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = crate::upstream::parse_duration)]
    pub connect_timeout: Option<std::time::Duration>,
}

/// What one fetch expects of the bytes. An expectation belongs to this
/// request only: a mismatch fails it (exit 4, both values named) and the
/// object stays in the store under its URL and real hash.
#[derive(Debug, Args)]
pub struct ExpectArgs {
    /// Expected BLAKE3 hex (short for --checksum blake3=HEX)
    #[arg(long, value_name = "HEX")]
    pub blake3: Option<String>,
    /// Expected SHA-256 hex (short for --checksum sha256=HEX)
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Expected digest, ALGO one of sha256, sha512, blake3 (repeatable)
    #[arg(long, value_name = "ALGO=HEX")]
    pub checksum: Vec<String>,
    /// Take the expected digest from a SHA256SUMS/SHA512SUMS-style file
    /// (`HEX  NAME` or `SHA256 (NAME) = HEX`), the line for the URL's file
    /// name
    #[arg(long, value_name = "PATH|URL")]
    pub checksums_file: Option<String>,
    /// Ask the origin even when an expected digest names an object the
    /// store already has (by default that copy is used without a request)
    #[arg(long)]
    pub revalidate: bool,
}

#[derive(Debug, Args)]
pub struct ParentArgs {
    /// Another blockcache (`blockcache serve`) to ask before the origin
    /// (repeatable, asked in order)
    #[arg(
        long = "parent",
        value_name = "URL",
        env = "BLOCKCACHE_PARENTS",
        value_delimiter = ','
    )]
    pub parent: Vec<String>,
}

impl ParentArgs {
    /// The parent URLs given, trimmed, empty entries (`a,,b`) left out.
    pub fn urls(&self) -> Vec<String> {
        self.parent
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect()
    }
}

// `[::1]:8472` in the help text below is an address, not a doc link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (repeatable): 127.0.0.1:8472, [::1]:8472,
    /// localhost:8472 (every address it resolves to), :8472 (all
    /// interfaces), unix:/run/blockcache.sock [default: 127.0.0.1:8472]
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Mirror: serve URL/<PATH> at /m/NAME/<PATH> (repeatable)
    #[arg(long, value_name = "NAME=URL")]
    pub mirror: Vec<String>,
    /// A header sent to mirror NAME's origin with every request
    /// (repeatable), e.g. --mirror-header 'images=Authorization: Bearer X'
    #[arg(long, value_name = "NAME='Header: value'")]
    pub mirror_header: Vec<String>,
    /// Re-check a mirrored URL with the origin at most this often [default: 60]
    #[arg(long, value_name = "SECONDS")]
    pub revalidate: Option<u64>,
    /// Configuration file (TOML) [default: $XDG_CONFIG_HOME/blockcache/config.toml
    /// when it exists]; flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print it (secrets masked) and exit
    #[arg(long)]
    pub check_config: bool,
    /// On SIGTERM/SIGINT, let running responses finish for at most this
    /// long [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub drain_timeout: Option<u64>,
    /// Connections served at once; more wait until one closes. Each takes
    /// a file descriptor: the soft RLIMIT_NOFILE is raised to the hard
    /// limit at start [default: 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Threads that serve connections, each keeping its connections from
    /// accept to close (as nginx's worker processes do); 0 serves them on
    /// the main runtime's threads. Downloads run on the main runtime
    /// either way [default: the number of CPUs]
    #[arg(long, value_name = "N")]
    pub threads: Option<u16>,
    /// Keep the store under SIZE: evict least recently used complete
    /// objects nobody uses; refuse (507) a fill that cannot fit
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Access log: a file path, `-` for stderr, or `off` [default: -]
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<String>,
    /// Access log format [default: combined]
    #[arg(long, value_name = "FORMAT", value_parser = ["combined", "json"])]
    pub access_log_format: Option<String>,
    #[command(flatten)]
    pub parents: ParentArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub shared: SharedArgs,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// One JSON array on stdout
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Redraw the table every second (with download rates) until Ctrl-C
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// BLAKE3 hex, unique prefix, sha256:HEX, object key or URL
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Byte range START-END (inclusive, like HTTP and curl -r), START- to
    /// the end, or -N for the last N bytes
    #[arg(long, value_name = "START-END", allow_hyphen_values = true)]
    pub range: Option<String>,
    /// Write binary data even when stdout is a terminal
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// BLAKE3 hex, unique prefix, object key or URL [default: all objects]
    #[arg(value_name = "REF")]
    pub reference: Option<String>,
    /// Refetch damaged chunks (only those) from the object's source; also
    /// fetches the chunks an incomplete object is missing
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// BLAKE3 hex, unique prefix, object key or URL
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Write the manifest to FILE instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// BLAKE3 hex, unique prefix, object key or URL
    #[arg(value_name = "REF")]
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Evict until the store takes at most SIZE on disk
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Print what would be evicted; remove nothing
    #[arg(long, requires = "max_size")]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// File to copy into the store
    pub file: PathBuf,
    /// Chunk size (power of two, 64KiB..64MiB)
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub chunk_size: u64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Size of the generated image
    #[arg(long, value_name = "SIZE", default_value = "2GiB", value_parser = parse_size)]
    pub size: u64,
    /// Speed of the simulated WAN link (shared by all connections)
    #[arg(long, value_name = "RATE", default_value = "200MB/s", value_parser = parse_rate)]
    pub rate: u64,
}
