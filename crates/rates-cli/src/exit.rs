//! How the `rates` command ends: its exit codes, defined and documented
//! here once (the constants, and the text `--help` shows), and what Ctrl-C
//! and SIGTERM do to a command that is working.

use std::process::ExitCode;

use rates_server::signals::{self, Stop, Watch};

/// All good.
pub const SUCCESS: u8 = 0;
/// Some items failed (the others are still written), or the work could not
/// be done (a broker lost, an address that cannot be listened on).
pub const FAILED: u8 = 1;
/// Bad usage or input, refused before any request.
pub const USAGE: u8 = 2;
/// Stopped by Ctrl-C: 128 + SIGINT's number, as a shell reports it.
pub const INTERRUPTED: u8 = 130;
/// Stopped by SIGTERM: 128 + its number.
pub const TERMINATED: u8 = 143;

/// The exit codes, for `--help`: a macro, so that each subcommand's help
/// can `concat!` it after its examples. A test holds it to the constants.
macro_rules! help {
    () => {
        "\
Exit codes:
  0    all good
  1    some items failed (the others are still written)
  2    bad usage or input, refused before any request
  130  stopped by Ctrl-C (what arrived is written)
  143  stopped by SIGTERM (what arrived is written)"
    };
}
pub(crate) use help;

/// `code` as the process's exit code.
pub fn code(code: u8) -> ExitCode {
    ExitCode::from(code)
}

/// The exit code of a command a signal stopped.
pub fn of_stop(stop: Stop) -> u8 {
    match stop {
        Stop::Interrupt => INTERRUPTED,
        Stop::Terminate => TERMINATED,
    }
}

/// Hears Ctrl-C and SIGTERM while the returned watch lives: `first` is
/// called on the first (to stop the work gently); on the second, a line
/// `{who}: SIGNAL again: stopping at once` goes to stderr, an output file
/// half written is removed, and the process ends with the signal's code.
pub(crate) fn on_signals(who: &'static str, first: impl FnOnce(Stop) + Send + 'static) -> std::io::Result<Watch> {
    signals::watch(first, move |stop| {
        eprintln!("{who}: {} again: stopping at once", stop.signal());
        crate::output::remove_pending();
        std::process::exit(of_stop(stop).into());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_documents_every_code_and_no_other() {
        let codes: Vec<u8> =
            help!().lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
        assert_eq!(codes, [SUCCESS, FAILED, USAGE, INTERRUPTED, TERMINATED]);
        assert_eq!((of_stop(Stop::Interrupt), of_stop(Stop::Terminate)), (INTERRUPTED, TERMINATED));
    }
}
