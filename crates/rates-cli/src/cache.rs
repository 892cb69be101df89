//! The local store of an external API's answers, as the command line sees
//! it: where it is (`--cache`, else `RATES_CACHE`, else
//! `$XDG_CACHE_HOME/rates`, else `~/.cache/rates`), whether a `history`
//! uses it, the codes an external API accepts kept there for a day
//! ([`api_codes`]), and `rates cache info|clear`. The store itself is
//! [`rates_core::store`].
//!
//! What only reads opens the store only to read (`history --offline`,
//! `cache info`): a store that cannot be written serves them as any other.
//! A `history` that would store answers in it warns once that they are not
//! kept, and prints them. A store that cannot be used at all is exit code 2
//! with one line naming its file and why, before any request; `fetch`,
//! which keeps only the API's codes there, goes on without it (a `-v` line).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::NaiveDate;
use clap::{Args, Subcommand};
use rates_core::Currency;
use rates_core::store::{Query, Store, Stored, Writer};

use crate::config::Target;
use crate::flags::{CacheFlag, StoreFlags};
use crate::{Usage, exit};

/// Options of `rates cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// What to do with the store.
    #[command(subcommand)]
    pub action: CacheAction,
}

/// What `rates cache` does.
#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Where the store is, its size, and what it holds per API and base.
    Info(CacheFlag),
    /// Forget every stored answer.
    Clear(CacheFlag),
}

/// The store's folder: `flag` (from `--cache` or `RATES_CACHE`), else the
/// user's cache folder as `env` tells it.
fn location_from(flag: &CacheFlag, env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, Usage> {
    if let Some(dir) = &flag.cache {
        return Ok(dir.clone());
    }
    // The XDG spec says to ignore a relative XDG_CACHE_HOME.
    let xdg = env("XDG_CACHE_HOME").map(PathBuf::from).filter(|p| p.is_absolute());
    let home = env("HOME").map(PathBuf::from).filter(|p| p.is_absolute()).map(|h| h.join(".cache"));
    match xdg.or(home) {
        Some(dir) => Ok(dir.join("rates")),
        None => Err(Usage("no folder for the store: name one with --cache or RATES_CACHE".into())),
    }
}

pub(crate) fn location(flag: &CacheFlag) -> Result<PathBuf, Usage> {
    location_from(flag, |name| std::env::var_os(name))
}

/// A `history`'s use of the store, decided before any request.
pub(crate) struct HistoryStore {
    /// `None`: `--offline`, and nothing stored.
    store: Option<Store>,
    /// The API the answers are stored under.
    api: String,
    pub offline: bool,
    max_age: Duration,
}

impl HistoryStore {
    /// The store, if this run uses one: only answers of an external API
    /// are stored, and `--no-cache` turns it off.
    pub fn open(flags: &StoreFlags, target: &Target) -> anyhow::Result<Option<HistoryStore>> {
        let api = match target {
            _ if flags.no_cache => return Ok(None),
            Target::Remote(api) => api.clone(),
            Target::Embedded(_) if flags.offline => {
                return Err(Usage(
                    "--offline: the store holds the answers of an external API: name it with --api or RATES_API".into(),
                )
                .into());
            }
            // The embedded server answers at once from data in the binary.
            Target::Embedded(_) => return Ok(None),
        };
        let dir = location(&flags.dir)?;
        // Offline, the store is only read, and made if missing by no one.
        let store = if flags.offline { Store::open_read_only(&dir) } else { Store::open(&dir).map(Some) };
        let store = store.map_err(|e| Usage(format!("{e} (--no-cache runs without it)")))?;
        Ok(Some(HistoryStore { store, api, offline: flags.offline, max_age: flags.max_age }))
    }

    /// What the store knows of each of `days`. A store that cannot be
    /// read is a usage error, as one that cannot be opened.
    pub fn lookup(&self, base: Currency, symbols: &[Currency], days: &[NaiveDate]) -> anyhow::Result<Vec<Stored>> {
        let Some(store) = &self.store else { return Ok(vec![Stored::Missing; days.len()]) };
        let q = Query { api: &self.api, base, symbols, days };
        store.lookup(&q, rates_core::store::unix_now(), self.max_age).map_err(|e| unusable(e).into())
    }

    /// The store, to keep the codes the API accepts ([`api_codes`]).
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// A writer of the answers of this run, which asks `asked` days, on a
    /// thread of its own; none for a store that cannot be written, which a
    /// warning says once: the run goes on, its answers only not kept.
    pub fn writer(self, symbols: &[Currency], asked: usize) -> anyhow::Result<Option<Writer>> {
        let Some(store) = self.store else { return Ok(None) };
        if let Some(why) = store.read_only() {
            eprintln!(
                "rates: warning: store {} is read-only ({why}): the {asked} days asked now will not be kept",
                store.path().display()
            );
            return Ok(None);
        }
        Ok(Some(store.writer(&self.api, symbols)?))
    }
}

/// A store that cannot be used: exit code 2, as bad input.
fn unusable(e: rates_core::store::StoreError) -> Usage {
    Usage(e.to_string())
}

/// How long the codes an API's `/currencies` listed are trusted: a
/// service adds or drops a currency rarely, and a run that finds them
/// older asks once more.
pub(crate) const CODES_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Why the codes of an API are not known: said in a `-v` line, and the
/// run goes on with the supported codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoCodes(pub String);

/// The codes the API at `api` accepts: from `store` if they were asked for
/// within [`CODES_MAX_AGE`] (`now` in Unix seconds), else from `ask` (which
/// asks the API's `/currencies` once), stored for the next runs. Offline,
/// whatever the store has is used however old, and nothing is asked. A
/// store that cannot be read or written costs a request, never the run:
/// its error is logged at `-v`.
pub(crate) fn api_codes(
    store: Option<&Store>,
    api: &str,
    offline: bool,
    now: i64,
    ask: impl FnOnce() -> Result<Vec<Currency>, NoCodes>,
) -> Result<Vec<Currency>, NoCodes> {
    if let Some(store) = store {
        match store.currencies(api) {
            Ok(Some((codes, at))) if offline || now.saturating_sub(at) < CODES_MAX_AGE.as_secs() as i64 => {
                return Ok(codes);
            }
            Ok(_) => {}
            Err(e) => crate::session::verbose(&format!("{e}: the codes of {api} are asked again")),
        }
    }
    if offline {
        return Err(NoCodes("not in the store, and --offline asks nothing".into()));
    }
    let codes = ask()?;
    if let Some(store) = store {
        let kept = match store.read_only() {
            Some(why) => Err(format!("store {} is read-only ({why})", store.path().display())),
            None => store.put_currencies(api, &codes, now).map_err(|e| e.to_string()),
        };
        if let Err(e) = kept {
            crate::session::verbose(&format!("{e}: the codes of {api} are not kept"));
        }
    }
    Ok(codes)
}

/// The store of a command that has no `--no-cache` (`fetch`), for the
/// codes of `api` alone: `None` (and a `-v` line) if it cannot be opened.
pub(crate) fn codes_store(flag: &CacheFlag) -> Option<Store> {
    let opened = location(flag).map_err(anyhow::Error::from).and_then(|dir| Ok(Store::open(&dir)?));
    opened.map_err(|e| crate::session::verbose(&format!("{e}: the codes the API accepts are not kept"))).ok()
}

/// Runs `rates cache info|clear`.
pub(crate) fn run(args: CacheArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match args.action {
        CacheAction::Info(flag) => {
            let dir = location(&flag)?;
            // Only read: a store that cannot be written is shown as well.
            let Some(store) = Store::open_read_only(&dir).map_err(unusable)? else {
                let file = dir.join(rates_core::store::FILE_NAME);
                // A folder where no store can be made is no place for one.
                if dir.is_dir()
                    && let Err(e) = can_write_in(&dir)
                {
                    let why = format!("store {}: none there, and none can be made: {e}", file.display());
                    return Err(Usage(why).into());
                }
                writeln!(out, "store: {} (empty: nothing stored yet)", file.display())?;
                return Ok(exit::code(exit::SUCCESS));
            };
            writeln!(out, "store: {} ({})", store.path().display(), size(store.size()))?;
            let summary = store.summary().map_err(unusable)?;
            if summary.is_empty() {
                writeln!(out, "no answers stored")?;
            }
            let width = summary.iter().map(|s| s.api.len()).max().unwrap_or(0).max(3);
            if !summary.is_empty() {
                writeln!(out, "{:width$}  base  {:>6}  {:10}  {:10}  symbols", "api", "days", "from", "to")?;
            }
            for s in &summary {
                writeln!(
                    out,
                    "{:width$}  {:4}  {:>6}  {}  {}  {}",
                    s.api,
                    s.base,
                    s.days,
                    s.first,
                    s.last,
                    s.symbols.join(",")
                )?;
            }
        }
        CacheAction::Clear(flag) => {
            let dir = location(&flag)?;
            match Store::open_existing(&dir).map_err(unusable)? {
                Some(mut store) => {
                    let rows = store.clear().map_err(unusable)?;
                    writeln!(out, "cleared {}: {rows} rows removed", store.path().display())?;
                }
                None => writeln!(out, "nothing to clear at {}", dir.display())?,
            }
        }
    }
    out.flush()?;
    Ok(exit::code(exit::SUCCESS))
}

/// Whether a file can be made in the folder `dir`: one is made and
/// removed, as nothing else tells (root, read-only file systems, ACLs).
fn can_write_in(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".{}-probe-{}", rates_core::store::FILE_NAME, std::process::id()));
    std::fs::File::create_new(&probe)?;
    std::fs::remove_file(&probe)
}

/// Bytes as B, KiB or MiB.
fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn the_store_is_where_the_flag_then_xdg_then_home_says() {
        let flag = |p: Option<&str>| CacheFlag { cache: p.map(PathBuf::from) };
        let all = [("XDG_CACHE_HOME", "/x/cache"), ("HOME", "/home/u")];
        assert_eq!(location_from(&flag(Some("here")), env(&all)).ok(), Some(PathBuf::from("here")));
        assert_eq!(location_from(&flag(None), env(&all)).ok(), Some(PathBuf::from("/x/cache/rates")));
        let relative = [("XDG_CACHE_HOME", "cache"), ("HOME", "/home/u")];
        assert_eq!(location_from(&flag(None), env(&relative)).ok(), Some(PathBuf::from("/home/u/.cache/rates")));
        let e = location_from(&flag(None), env(&[])).expect_err("nowhere");
        assert!(e.0.contains("--cache"), "{e}");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(10), "10 B");
        assert_eq!(size(2048), "2.0 KiB");
        assert_eq!(size(3 * 1024 * 1024 + 1), "3.0 MiB");
    }
}
