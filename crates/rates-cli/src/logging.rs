//! Log lines on stderr, never stdout (which carries the results): through
//! `tracing-subscriber`, filtered by `-v`/`-vv`/`-q` or `RUST_LOG`.
//!
//! | flags   | shows                                                             |
//! |---------|-------------------------------------------------------------------|
//! | `-q`    | errors only (`serve`: no access log)                              |
//! | (none)  | warnings; `serve` also logs one access line per request           |
//! | `-v`    | each retry with its reason and wait, each 429 and its Retry-After, throttle waits over a second, process-pool workers lost and respawned, `serve`'s access lines |
//! | `-vv`   | debug: also the embedded server's access lines                    |
//! | `-vvv`  | trace                                                             |
//!
//! Without `-v` or `-q`, `RUST_LOG` (e.g. `rates::retry=info,concur=info`)
//! replaces the default filter; the flags, typed on the command line, win
//! over it. A log line written while a progress bar is drawn suspends the bar
//! for the write, so neither garbles the other.

use std::io::{self, Write};
use std::sync::Mutex;

use clap::{ArgAction, Args};
use concur::sync;
use indicatif::{ProgressBar, WeakProgressBar};
use tracing_subscriber::EnvFilter;

/// How much to log: global flags, accepted before or after the subcommand.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct Verbosity {
    /// More log lines on stderr: -v retries, 429s, long throttle waits and respawned workers; -vv debug.
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on stderr (no warnings; `serve`: no access log).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The target of the embedded and served API's access lines.
const ACCESS: &str = rates_server::ACCESS_LOG;

impl Verbosity {
    /// The filter directives the flags ask for; `None` without flags.
    fn directives(self, serving: bool) -> Option<String> {
        let d = match (self.quiet, self.verbose) {
            (true, _) => "error".to_string(),
            (false, 0) => return None,
            // The embedded server's access lines (one per request of a
            // fetch) would drown the retries: they come at -vv.
            (false, 1) if serving => "info".to_string(),
            (false, 1) => format!("info,{ACCESS}=warn"),
            (false, 2) => "debug".to_string(),
            (false, _) => "trace".to_string(),
        };
        Some(d)
    }
}

/// The filter when neither flags nor `RUST_LOG` say otherwise.
fn default_directives(serving: bool) -> String {
    if serving { format!("warn,{ACCESS}=info") } else { "warn".to_string() }
}

/// Installs the stderr logger for this process: `serving` for `rates
/// serve`, whose access lines are on by default. `rust_log` is the value of
/// `RUST_LOG`. A bad `RUST_LOG` is reported and the default used. Does
/// nothing if a logger is already installed (tests running commands
/// in-process).
pub fn init(verbosity: Verbosity, serving: bool, rust_log: Option<&str>) {
    let filter = filter(verbosity, serving, rust_log);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| BarAwareStderr)
        // Its report of a failed write would go to stderr with
        // `eprintln!`, which panics when stderr is closed: a server whose
        // terminal went away would fail every request it logs.
        .log_internal_errors(false)
        .try_init();
}

/// The filter of [`init`].
fn filter(verbosity: Verbosity, serving: bool, rust_log: Option<&str>) -> EnvFilter {
    let rust_log = rust_log.map(str::trim).filter(|s| !s.is_empty());
    let directives = match (verbosity.directives(serving), rust_log) {
        (Some(d), _) => d,
        (None, Some(env)) => match EnvFilter::try_new(env) {
            Ok(f) => return f,
            Err(e) => {
                eprintln!("rates: ignoring RUST_LOG={env:?}: {e}");
                default_directives(serving)
            }
        },
        (None, None) => default_directives(serving),
    };
    // Our own directives always parse.
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("warn"))
}

/// The progress bar on screen now, if any: log lines are written around it.
static BAR: Mutex<Option<WeakProgressBar>> = Mutex::new(None);

/// A progress bar of `len` steps that log lines do not garble: each line is
/// written with the bar cleared, and the bar redrawn below it.
pub(crate) fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    *sync::lock(&BAR) = Some(bar.downgrade());
    bar
}

/// Stderr, suspending the live progress bar (if any) for each write.
struct BarAwareStderr;

impl Write for BarAwareStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The formatter hands over one whole line per event. A line that
        // cannot be written (stderr closed) is dropped: logging must never
        // stop the work it reports on.
        let bar = sync::lock(&BAR).as_ref().and_then(WeakProgressBar::upgrade);
        let _ = match bar {
            Some(bar) if !bar.is_finished() => bar.suspend(|| io::stderr().lock().write_all(buf)),
            _ => io::stderr().lock().write_all(buf),
        };
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(verbose: u8, quiet: bool) -> Verbosity {
        Verbosity { verbose, quiet }
    }

    #[test]
    fn flags_win_over_rust_log_which_wins_over_the_default() {
        assert_eq!(filter(v(0, false), false, None).to_string(), "warn");
        assert_eq!(filter(v(0, false), true, None).to_string(), format!("{ACCESS}=info,warn"));
        assert_eq!(filter(v(0, false), false, Some("rates::retry=info")).to_string(), "rates::retry=info");
        assert_eq!(filter(v(1, false), false, Some("off")).to_string(), format!("{ACCESS}=warn,info"));
        assert_eq!(filter(v(1, false), true, None).to_string(), "info");
        assert_eq!(filter(v(2, false), false, None).to_string(), "debug");
        assert_eq!(filter(v(0, true), true, Some("debug")).to_string(), "error");
        // An empty RUST_LOG is no RUST_LOG; a bad one falls back.
        assert_eq!(filter(v(0, false), false, Some(" ")).to_string(), "warn");
        assert_eq!(filter(v(0, false), false, Some("=[")).to_string(), "warn");
    }
}
