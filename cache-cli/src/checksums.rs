//! Checksum files as publishers print them (SHA256SUMS, SHA512SUMS,
//! b3sum output): the GNU form `HEX  name` / `HEX *name` and the BSD form
//! `SHA256 (name) = HEX`. Lines of other shapes (comments, the armour of a
//! clearsigned file) are skipped.

use cache_core::{Algo, Digest};

use crate::cli::ExpectArgs;
use crate::Failure;
use cache_http::HttpSourceConfig;

/// Largest checksums file read (they list a few files, not thousands).
const MAX_SUMS_BYTES: u64 = 4 << 20;

/// Every digest one fetch of `url` expects, from its flags.
pub async fn expected(
    a: &ExpectArgs,
    url: &str,
    http: HttpSourceConfig,
) -> Result<Vec<Digest>, Failure> {
    let mut out = Vec::new();
    let flag = |name: &str, algo: Algo, hex: &str| {
        Digest::from_hex(algo, hex).map_err(|e| Failure::usage(format!("--{name} {hex:?}: {e}")))
    };
    if let Some(h) = &a.blake3 {
        out.push(flag("blake3", Algo::Blake3, h)?);
    }
    if let Some(h) = &a.sha256 {
        out.push(flag("sha256", Algo::Sha256, h)?);
    }
    for spec in &a.checksum {
        out.push(Digest::parse(spec).map_err(|e| Failure::usage(format!("--checksum {e}")))?);
    }
    if let Some(origin) = &a.checksums_file {
        let name = url_file_name(url)
            .ok_or_else(|| Failure::usage(format!("{url}: no file name to look up in {origin}")))?;
        let text = read_sums(origin, http).await?;
        out.push(pick(&text, origin, &name).map_err(Failure::usage)?);
    }
    Ok(out)
}

/// The text of a checksums file: a local path, or an http(s) URL.
/// Fetched with the image's origin settings (credentials, CA, retries).
async fn read_sums(origin: &str, http: HttpSourceConfig) -> Result<String, Failure> {
    let bytes = if origin.starts_with("http://") || origin.starts_with("https://") {
        let failed = |e: &dyn std::fmt::Display| {
            Failure::new(
                crate::exit::NETWORK,
                format!("--checksums-file {origin}: {e}"),
            )
        };
        let source = crate::commands::http_source(origin, http)?;
        let info = source.probe().await.map_err(|e| failed(&e))?;
        if info.len > MAX_SUMS_BYTES {
            return Err(Failure::usage(format!(
                "--checksums-file {origin}: {} bytes is too large for a checksums file",
                info.len
            )));
        }
        let mut body = Vec::with_capacity(info.len as usize);
        if info.len > 0 {
            use futures::StreamExt;
            let mut r = source
                .read_range(0..info.len, &info)
                .await
                .map_err(|e| failed(&e))?;
            while let Some(piece) = r.stream.next().await {
                body.extend_from_slice(&piece.map_err(|e| failed(&e))?);
            }
        }
        body
    } else {
        std::fs::read(origin)
            .map_err(|e| Failure::usage(format!("--checksums-file {origin}: {e}")))?
    };
    String::from_utf8(bytes)
        .map_err(|_| Failure::usage(format!("--checksums-file {origin}: not a text file")))
}

/// One `(digest, file name)` line of a checksums file.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    digest: Digest,
    name: String,
}

/// Parses one line; `None` for lines that are not a checksum line.
/// `bare_64` is the algorithm of a 64-digit GNU-form digest (SHA-256, or
/// BLAKE3 for a file named like b3sum output).
fn parse_line(line: &str, bare_64: Algo) -> Option<Entry> {
    let line = line.trim_end_matches(['\r', '\n']);
    // BSD: ALGO (name) = HEX
    if let Some((algo, rest)) = line.split_once(" (") {
        if let Some((name, hex)) = rest.rsplit_once(") = ") {
            let algo: Algo = algo.trim().parse().ok()?;
            let digest = Digest::from_hex(algo, hex.trim()).ok()?;
            return Some(Entry {
                digest,
                name: name.to_owned(),
            });
        }
    }
    // GNU: HEX, whitespace, optional '*' (binary mode), name
    let (hex, rest) = line.split_once(char::is_whitespace)?;
    let algo = match hex.len() {
        64 => bare_64,
        128 => Algo::Sha512,
        _ => return None,
    };
    let digest = Digest::from_hex(algo, hex).ok()?;
    let name = rest.trim_start();
    let name = name.strip_prefix('*').unwrap_or(name);
    (!name.is_empty()).then(|| Entry {
        digest,
        name: name.to_owned(),
    })
}

/// The last path segment of a URL (its file name), without query.
pub fn url_file_name(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let seg = parsed.path_segments()?.rev().find(|s| !s.is_empty())?;
    Some(percent_decode(seg).unwrap_or_else(|| seg.to_owned()))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let v = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The digest the checksums file `text` (read from `origin`, which names
/// it in errors and hints b3sum output by its name) gives for `file_name`.
/// Fails with a one-line reason when no line or several different lines
/// match.
pub fn pick(text: &str, origin: &str, file_name: &str) -> Result<Digest, String> {
    let lower = origin.to_ascii_lowercase();
    let bare_64 = if lower.contains("b3") || lower.contains("blake3") {
        Algo::Blake3
    } else {
        Algo::Sha256
    };
    let mut found: Vec<Digest> = Vec::new();
    let mut lines = 0;
    for entry in text.lines().filter_map(|l| parse_line(l, bare_64)) {
        lines += 1;
        let base = entry.name.rsplit('/').next().unwrap_or(&entry.name);
        if (entry.name == file_name || base == file_name) && !found.contains(&entry.digest) {
            found.push(entry.digest);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 if lines == 0 => Err(format!(
            "--checksums-file {origin}: no checksum lines (expected `HEX  NAME` or `SHA256 (NAME) = HEX`)"
        )),
        0 => Err(format!(
            "--checksums-file {origin}: no line for {file_name:?} among its {lines} lines"
        )),
        n => Err(format!(
            "--checksums-file {origin}: {n} different lines for {file_name:?}; pass --checksum ALGO=HEX instead"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn gnu_and_bsd_forms() {
        let text = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{A}  other.iso\n{} *disk.img\n",
            "1".repeat(64)
        );
        let d = pick(&text, "SHA256SUMS", "disk.img").unwrap();
        assert_eq!((d.algo, d.hex()), (Algo::Sha256, "1".repeat(64)));
        let bsd = format!(
            "SHA512 (./images/disk.img) = {}\nSHA256 (x) = {A}\n",
            "2".repeat(128)
        );
        let d = pick(&bsd, "sums.txt", "disk.img").unwrap();
        assert_eq!((d.algo, d.hex()), (Algo::Sha512, "2".repeat(128)));
        let d = pick(&format!("{A}  disk.img\n"), "disk.img.b3", "disk.img").unwrap();
        assert_eq!(d.algo, Algo::Blake3);
    }

    #[test]
    fn none_or_several_is_a_clear_error() {
        let text = format!("{A}  a.img\n");
        let e = pick(&text, "SUMS", "b.img").unwrap_err();
        assert!(e.contains("no line for \"b.img\""), "{e}");
        assert!(pick("hello\n", "SUMS", "a.img")
            .unwrap_err()
            .contains("no checksum lines"));
        let two = format!("{A}  a.img\n{}  dir/a.img\n", "3".repeat(64));
        assert!(pick(&two, "SUMS", "a.img")
            .unwrap_err()
            .contains("2 different"));
        let same = format!("{A}  a.img\n{A}  ./a.img\n");
        assert!(pick(&same, "SUMS", "a.img").is_ok(), "duplicates agree");
    }

    #[test]
    fn url_names() {
        assert_eq!(
            url_file_name("http://h/p/disk%20one.img?x=1").as_deref(),
            Some("disk one.img")
        );
        assert_eq!(url_file_name("http://h/p/").as_deref(), Some("p"));
    }
}
