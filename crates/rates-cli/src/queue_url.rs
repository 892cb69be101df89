//! Where the queue's URL comes from (`--queue`, `--queue-file`,
//! `RATES_QUEUE`), its check, its CA file (`--queue-ca`,
//! `RATES_QUEUE_CA`), and how it is shown: never with its password
//! ([`shown`]).
//!
//! The URL carries the broker's password, so it can be kept off the
//! command line, where `ps` shows it to every user of the host: in a file
//! only its owner reads (`--queue-file`, its first line), or in the
//! environment (`RATES_QUEUE`).

use std::path::Path;

use crate::Usage;
use crate::flags::{ClientFlags, QueueFlags};

/// The environment variable a queue's URL is taken from when neither
/// `--queue` nor `--queue-file` is given.
pub(crate) const ENV: &str = "RATES_QUEUE";

/// `url` as it may be shown: its password, if any, as `***`.
pub(crate) fn shown(url: &str) -> String {
    concur_redis::redact_url(url)
}

/// The queue of `fetch`, `history` or `bench`, if any, checked.
pub(crate) fn of_client(flags: &ClientFlags) -> Result<Option<String>, Usage> {
    resolve(flags.queue.as_deref(), flags.queue_file.as_deref(), flags.queue_ca.as_deref())
}

/// The queue of `worker` or `queue status`, checked: one is needed.
pub(crate) fn of_queue(flags: &QueueFlags) -> Result<String, Usage> {
    resolve(flags.queue.as_deref(), flags.queue_file.as_deref(), flags.queue_ca.as_deref())?
        .ok_or_else(|| Usage(format!("no queue: give --queue URL, --queue-file PATH or {ENV}")))
}

/// The queue's URL from the flag, else the file, else the environment,
/// checked, with the CA file if one is given.
fn resolve(flag: Option<&str>, file: Option<&Path>, ca: Option<&Path>) -> Result<Option<String>, Usage> {
    let (url, from) = match (flag, file) {
        (Some(url), _) => (url.to_owned(), "--queue"),
        (None, Some(path)) => (first_line(path)?, "--queue-file"),
        (None, None) => match std::env::var(ENV) {
            Ok(url) if !url.trim().is_empty() => (url.trim().to_owned(), ENV),
            _ => return Ok(None),
        },
    };
    concur_redis::check_url(&url).map_err(|e| Usage(format!("{from}: {e}")))?;
    match ca {
        None => Ok(Some(url)),
        Some(ca) => {
            // Absolute, so it names the same file whatever a process
            // started with the URL takes as its directory; read now, so a
            // missing file is a usage error before any work.
            let ca = std::fs::canonicalize(ca)
                .map_err(|e| Usage(format!("--queue-ca: cannot read {}: {e}", ca.display())))?;
            std::fs::read(&ca).map_err(|e| Usage(format!("--queue-ca: cannot read {}: {e}", ca.display())))?;
            concur_redis::with_ca_file(&url, &ca).map(Some).map_err(|e| Usage(format!("--queue-ca: {e}")))
        }
    }
}

/// The first line of the file at `path`, trimmed; an empty one is refused.
fn first_line(path: &Path) -> Result<String, Usage> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Usage(format!("--queue-file: cannot read {}: {e}", path.display())))?;
    match text.lines().next().map(str::trim) {
        Some(line) if !line.is_empty() => Ok(line.to_owned()),
        _ => Err(Usage(format!("--queue-file: {} has no URL on its first line", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("rates-queue-url-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("a temp file");
        path
    }

    #[test]
    fn the_flag_wins_then_the_file() {
        let file = temp_file("url", "redis://alice:s3cret@host:6379/1\nignored\n");
        assert_eq!(resolve(Some("redis://h/0"), Some(&file), None).expect("valid").as_deref(), Some("redis://h/0"));
        assert_eq!(
            resolve(None, Some(&file), None).expect("valid").as_deref(),
            Some("redis://alice:s3cret@host:6379/1")
        );
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn a_bad_file_or_url_is_said_without_the_password() {
        let e = resolve(None, Some(Path::new("/nonexistent/queue")), None).expect_err("no file");
        assert!(e.0.starts_with("--queue-file: cannot read /nonexistent/queue"), "{e}");
        let empty = temp_file("empty", "\n");
        let e = resolve(None, Some(&empty), None).expect_err("empty");
        assert!(e.0.contains("no URL on its first line"), "{e}");
        let bad = temp_file("bad", "http://alice:s3cret@host/0\n");
        let e = resolve(None, Some(&bad), None).expect_err("bad URL");
        assert!(e.0.starts_with("--queue-file: invalid URL") && !e.0.contains("s3cret"), "{e}");
        let e = resolve(Some("redis://alice:s3cret@host/zero"), None, None).expect_err("bad URL");
        assert!(e.0.starts_with("--queue: invalid URL") && !e.0.contains("s3cret"), "{e}");
        for f in [empty, bad] {
            let _ = std::fs::remove_file(f);
        }
    }

    #[test]
    fn a_ca_file_goes_with_a_tls_url() {
        let ca = temp_file("ca.pem", "-----BEGIN CERTIFICATE-----\n");
        let url = resolve(Some("rediss://h:6380/0"), None, Some(&ca)).expect("valid").expect("a URL");
        assert!(url.starts_with("rediss://h:6380/0?ssl_ca_certs=%2F"), "{url}");
        let e = resolve(Some("redis://h/0"), None, Some(&ca)).expect_err("not TLS");
        assert!(e.0.starts_with("--queue-ca: "), "{e}");
        let e = resolve(Some("rediss://h/0"), None, Some(Path::new("/nonexistent/ca.pem"))).expect_err("no file");
        assert!(e.0.starts_with("--queue-ca: cannot read"), "{e}");
        let _ = std::fs::remove_file(ca);
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(shown("rediss://alice:s3cret@host:6380/0"), "rediss://alice:***@host:6380/0");
    }
}
