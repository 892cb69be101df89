//! `rates bench --html`: the whole report as one HTML file that needs
//! nothing else: the table, the bar chart of wall times and the
//! timelines (both inlined SVG), the command line, the machine and the
//! date. No script, font, stylesheet or image is loaded from anywhere (its
//! content security policy forbids it), and nothing needs JavaScript to
//! show.

use std::ffi::OsString;
use std::fmt::Write as _;

use super::render::{Cells, cells, describe};
use super::stats::Report;
use super::timeline::escape;

/// The machine a report was measured on.
#[derive(Debug, Clone)]
pub(super) struct Machine {
    pub(super) cores: usize,
    /// The system's own name for itself (e.g. `Debian GNU/Linux 12
    /// (bookworm)`), or the target's family.
    pub(super) os: String,
    /// E.g. `Linux 6.1.0-18-amd64`.
    pub(super) kernel: Option<String>,
    pub(super) arch: &'static str,
    /// The processor's model name, where the system tells it.
    pub(super) cpu: Option<String>,
}

impl Machine {
    /// This machine.
    pub(super) fn this(cores: usize) -> Machine {
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| os_release_name(&text))
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        let kernel = nix::sys::utsname::uname()
            .ok()
            .map(|u| format!("{} {}", u.sysname().to_string_lossy(), u.release().to_string_lossy()));
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|text| cpu_model(&text));
        Machine { cores, os, kernel, arch: std::env::consts::ARCH, cpu }
    }

    fn describe(&self) -> String {
        let mut s = format!("{} core{}", self.cores, if self.cores == 1 { "" } else { "s" });
        if let Some(cpu) = &self.cpu {
            let _ = write!(s, " ({cpu})");
        }
        let _ = write!(s, " · {} · {}", self.os, self.arch);
        if let Some(k) = &self.kernel {
            let _ = write!(s, " · {k}");
        }
        s
    }
}

/// `PRETTY_NAME` of an os-release file.
fn os_release_name(text: &str) -> Option<String> {
    let value = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    let value = value.trim().trim_matches('"').trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// The first `model name` of a `/proc/cpuinfo`.
fn cpu_model(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    let value = line.split_once(':')?.1.trim();
    (!value.is_empty()).then(|| value.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The command line as a shell would take it back, the program named
/// `rates` (not its path) and any URL's password hidden.
pub(super) fn command_line(args: impl IntoIterator<Item = OsString>) -> String {
    let mut words = vec!["rates".to_owned()];
    for arg in args.into_iter().skip(1) {
        let arg = arg.to_string_lossy().into_owned();
        let arg = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") && value.contains("://") => {
                format!("{flag}={}", crate::queue_url::shown(value))
            }
            _ if arg.contains("://") => crate::queue_url::shown(&arg),
            _ => arg,
        };
        words.push(quoted(&arg));
    }
    words.join(" ")
}

/// `word` as one shell word: as it is when it needs no quotes.
fn quoted(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a report page shows besides the report.
#[derive(Debug, Clone)]
pub(super) struct Page {
    pub(super) command: String,
    pub(super) machine: Machine,
    /// When the bench ran, e.g. `2026-01-31 14:05 UTC`.
    pub(super) date: String,
    /// The bar chart of wall times, an SVG document.
    pub(super) bars: String,
    /// The timelines, an SVG document, or why there are none.
    pub(super) timelines: Result<String, String>,
}

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;color:#222;max-width:1120px;margin:24px auto;padding:0 16px;line-height:1.45}\
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}\
.what{color:#444;margin-top:0}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}\
dt{font-weight:600}dd{margin:0}code{font-family:ui-monospace,monospace;font-size:.92em;word-break:break-all}\
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.85em;font-variant-numeric:tabular-nums}\
th,td{padding:.3em .6em;border-bottom:1px solid #e5e5e5;white-space:nowrap}th{text-align:right;background:#f5f5f5}\
th:first-child,td:first-child{text-align:left}td{text-align:right}td.na{text-align:left;color:#a33}\
figure{margin:1em 0}figure svg{max-width:100%;height:auto;display:block}.note{color:#555;font-size:.9em}";

/// The report page.
pub(super) fn page(report: &Report, page: &Page) -> String {
    let mut s = String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    s.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n",
    );
    s.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(s, "<title>rates bench, {}</title>", escape(&page.date));
    s.push_str("<link rel=\"icon\" href=\"data:,\">\n");
    let _ = writeln!(s, "<style>{STYLE}</style>\n</head>\n<body>");
    s.push_str("<h1>rates bench</h1>\n");
    let _ = writeln!(s, "<p class=\"what\">{}</p>", escape(&describe(&report.workload)));
    s.push_str("<dl>\n");
    let _ = writeln!(s, "<dt>Command</dt><dd><code>{}</code></dd>", escape(&page.command));
    let _ = writeln!(s, "<dt>Machine</dt><dd>{}</dd>", escape(&page.machine.describe()));
    let _ = writeln!(s, "<dt>Date</dt><dd>{}</dd>", escape(&page.date));
    let _ = writeln!(s, "<dt>Version</dt><dd>rates {}</dd>", env!("CARGO_PKG_VERSION"));
    s.push_str("</dl>\n<h2>Results</h2>\n");
    table(&mut s, &cells(report));
    s.push_str(
        "<p class=\"note\">The median of the runs; spread: (slowest − fastest) ÷ median. \
         ideal: the least time the workload allows at the model's concurrency; ratio: wall ÷ ideal (1 is perfect), \
         and ratio served: the same from the latency the server measured of itself.</p>\n",
    );
    s.push_str("<h2>Wall time</h2>\n<figure>");
    s.push_str(svg_body(&page.bars));
    s.push_str("</figure>\n<h2>Timelines</h2>\n");
    match &page.timelines {
        Ok(svg) => {
            s.push_str(
                "<p class=\"note\">The last run of each model: one lane per thread, worker or task slot; \
                 each request attempt a bar from its start to its answer. The runs were traced to draw them, \
                 so the figures above include the cost of tracing.</p>\n<figure>",
            );
            s.push_str(svg_body(svg));
            s.push_str("</figure>\n");
        }
        Err(why) => {
            let _ = writeln!(s, "<p class=\"note\">No timelines: {}</p>", escape(why));
        }
    }
    s.push_str("</body>\n</html>\n");
    s
}

/// An SVG document as an element of the page: from its `<svg` on.
fn svg_body(svg: &str) -> &str {
    svg.find("<svg").map_or("", |at| &svg[at..])
}

fn table(s: &mut String, cells: &Cells) {
    s.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
    for h in &cells.header {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for row in &cells.rows {
        s.push_str("<tr>");
        match row {
            Ok(cells) => cells.iter().for_each(|c| {
                let _ = write!(s, "<td>{}</td>", escape(c));
            }),
            Err((model, why)) => {
                let span = cells.header.len().saturating_sub(1);
                let _ = write!(
                    s,
                    "<td>{}</td><td class=\"na\" colspan=\"{span}\">n/a: {}</td>",
                    escape(model),
                    escape(why)
                );
            }
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody>\n</table></div>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_reads_back_with_its_passwords_hidden() {
        let args =
            ["/some/where/rates", "bench", "--queue", "redis://u:secret@host/0", "--models=a b", "--api=http://x:pw@h"];
        let line = command_line(args.iter().map(OsString::from));
        assert!(!line.contains("secret") && !line.contains("pw@") && !line.contains("/some/where"), "{line}");
        assert!(line.starts_with("rates bench --queue 'redis://u:***@host/0'"), "{line}");
        assert!(line.contains("'--models=a b'"), "{line}");
        assert_eq!(quoted("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_machine_is_read_from_the_system_files() {
        let release = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(os_release_name(release).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(os_release_name("ID=x\n"), None);
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC   7B13 64-Core Processor\nflags\t: x\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13 64-Core Processor"));
        let m = Machine { cores: 2, os: "Debian".into(), kernel: Some("Linux 6.1".into()), arch: "x86_64", cpu: None };
        assert_eq!(m.describe(), "2 cores · Debian · x86_64 · Linux 6.1");
    }
}
