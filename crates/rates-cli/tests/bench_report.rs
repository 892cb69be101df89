//! `rates bench --html`, `--timeline` and `--trace` end to end: a small
//! bench writes all three, and the HTML report is opened in a real
//! browser (Debian's `chromium`, headless): it loads with no console
//! message, its charts are there with a size, and a screenshot of it has
//! colour where the charts are.
//!
//! The browser is required: without it the test fails and says how to
//! install it (the README's test command does).
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::run;
use serde_json::Value;

mod common;

/// How long one start of the browser may take before it is killed.
const BROWSER_LIMIT: Duration = Duration::from_secs(90);
/// The browser's window: tall enough for the whole report.
const WINDOW: (u32, u32) = (1200, 3200);

/// Records, into the page itself, what went wrong while it loaded (script
/// errors, failed loads, refused loads) and where each chart is drawn.
/// Put first in `<head>`, before anything it watches.
const PROBE: &str = r#"<script>
window.__errors = [];
addEventListener('error', e => __errors.push(String(e.message || (e.target && e.target.outerHTML) || e.type)), true);
addEventListener('securitypolicyviolation', e => __errors.push('refused: ' + e.violatedDirective + ' ' + e.blockedURI));
addEventListener('load', () => {
  const charts = [...document.querySelectorAll('svg')].filter(s => !s.parentElement.closest('svg')).map(s => {
    const r = s.getBoundingClientRect();
    return [r.left, r.top, r.width, r.height];
  });
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({ errors: __errors, charts: charts });
  document.body.appendChild(out);
});
</script>"#;

/// The browser on this machine's `PATH`.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("chromium")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "chromium is not installed: this test opens the HTML report in a headless browser. \
             Install Debian's chromium (apt-get install chromium), as the README's test command and CI do."
        )
    })
}

/// A started browser, killed with every process it started (its process
/// group) when dropped, whatever happened.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// Runs the headless browser with `args` and a profile of its own, as a
/// machine with no network needs it (no first-run, sync, component or
/// background fetches); gives its stdout and stderr. Fails if it runs past
/// [`BROWSER_LIMIT`] or fails.
fn browse(args: &[String], profile: &Path) -> (String, String) {
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut browser = Browser(command.spawn().unwrap());
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(browser.0.stdout.take().unwrap()));
    let err = drain(Box::new(browser.0.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = browser.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < BROWSER_LIMIT, "chromium ran past {BROWSER_LIMIT:?}: killed");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The group goes too: a helper process could hold the pipes open.
    drop(browser);
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "chromium failed ({status}): {err}");
    (out, err)
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The text of the element `<pre id="probe">` of a dumped DOM, as JSON.
fn probe_of(dom: &str) -> Value {
    let start = dom.find(r#"<pre id="probe">"#).map(|i| i + r#"<pre id="probe">"#.len());
    let text = start.and_then(|s| dom[s..].find("</pre>").map(|e| &dom[s..s + e]));
    let text = text.unwrap_or_else(|| panic!("the probe did not run; the page:\n{dom}"));
    let text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&");
    serde_json::from_str(&text).unwrap()
}

/// The screenshot as RGB rows.
fn pixels(png_file: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_file).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    let channels = frame.color_type.samples();
    assert!(frame.bit_depth == png::BitDepth::Eight && channels >= 3, "{frame:?}");
    let px = buf[..frame.buffer_size()].chunks(channels).map(|c| [c[0], c[1], c[2]]).collect();
    (frame.width, frame.height, px)
}

#[test]
fn the_html_report_shows_its_table_and_charts_in_a_headless_browser() {
    let dir = tempfile::Builder::new().prefix("rates-bench-report").tempdir().unwrap();
    let (html, svg, trace) = (dir.path().join("report.html"), dir.path().join("t.svg"), dir.path().join("t.json"));
    let (code, out, err) = run(&[
        "bench",
        "--models",
        "sync,thread-pool,async",
        "--requests",
        "20",
        "--sim-latency",
        "20ms",
        "--workers",
        "4",
        "--repeat",
        "1",
        "--html",
        html.to_str().unwrap(),
        "--timeline",
        svg.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("thread-pool"), "{out}");

    // The page needs nothing else: no script, no link, no remote address.
    let page = std::fs::read_to_string(&html).unwrap();
    for needle in ["<script", " src=", "url(", "@import", "stylesheet"] {
        assert!(!page.contains(needle), "the report has '{needle}'");
    }
    let addresses = page.matches("://").count();
    let namespaces = page.matches("http://www.w3.org/").count();
    assert_eq!(addresses, namespaces, "only SVG namespaces name an address");
    for what in ["<table", "rates bench --models sync,thread-pool,async", "cores", "UTC"] {
        assert!(page.contains(what), "the report has no '{what}'");
    }
    // The timeline file is the one in the page, and one panel a model.
    let timeline = std::fs::read_to_string(&svg).unwrap();
    assert!(page.contains(timeline.trim()), "the page inlines the timeline");
    let doc = roxmltree::Document::parse(&timeline).unwrap();
    let panels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("panel"))
        .filter_map(|n| n.attribute("data-model"))
        .collect();
    assert_eq!(panels, ["sync", "thread-pool", "async"]);
    // The merged trace: one process a run, named after it.
    let events: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let processes: Vec<&str> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert_eq!(processes, ["sync run 1", "thread-pool run 1", "async run 1"]);
    assert_eq!(events.iter().filter(|e| e["cat"] == "request").count(), 60);

    // As it is: a screenshot, and not one console message.
    let shot = dir.path().join("shot.png");
    let (_, log) = browse(
        &[
            "--enable-logging=stderr".into(),
            "--v=0".into(),
            format!("--screenshot={}", shot.display()),
            file_url(&html),
        ],
        &dir.path().join("profile-1"),
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "the page logged to the console:\n{}", console.join("\n"));

    // With the probe first in <head>: what failed and where the charts are.
    let probed = dir.path().join("probed.html");
    assert!(page.contains("<head>\n"));
    std::fs::write(&probed, page.replacen("<head>\n", &format!("<head>\n{PROBE}\n"), 1)).unwrap();
    let (dom, _) = browse(&["--dump-dom".into(), file_url(&probed)], &dir.path().join("profile-2"));
    let probe = probe_of(&dom);
    assert_eq!(probe["errors"], serde_json::json!([]), "errors while loading");
    let charts = probe["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 2, "the bar chart and the timelines: {charts:?}");

    // The screenshot is not blank, and each chart's area has colour in it.
    let (width, height, px) = pixels(&shot);
    assert_eq!((width, height), WINDOW);
    let colours: std::collections::HashSet<[u8; 3]> = px.iter().copied().collect();
    assert!(colours.len() > 10, "{} colours in the screenshot", colours.len());
    for chart in charts {
        let r: Vec<f64> = chart.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let (x, y, w, h) = (r[0], r[1], r[2], r[3]);
        assert!(w > 100.0 && h > 100.0, "a chart of {w}×{h}");
        assert!(y + h <= f64::from(height), "the chart at {y}+{h} is past the window: make it taller");
        let (x0, y0, x1, y1) = (x as u32, y as u32, (x + w) as u32, (y + h) as u32);
        let area = (x1 - x0) * (y1 - y0);
        let coloured = (y0..y1)
            .flat_map(|yy| (x0..x1).map(move |xx| (xx, yy)))
            .filter(|&(xx, yy)| px[(yy * width + xx) as usize] != [255, 255, 255])
            .count();
        let share = coloured as f64 / f64::from(area);
        assert!(share > 0.02, "the chart at {chart:?} is {:.1}% coloured", share * 100.0);
    }
}

#[test]
fn a_stopped_run_still_shows_what_it_did_until_then() {
    // Ten requests of 300 ms one after another, stopped at 1.5 s: up to five answered.
    let dir = tempfile::Builder::new().prefix("rates-bench-stopped").tempdir().unwrap();
    let svg = dir.path().join("t.svg");
    let args = ["bench", "--models", "sync", "--requests", "10", "--sim-latency", "300ms", "--repeat", "1"];
    let (code, _, err) = run(&[&args[..], &["--run-limit", "1500ms", "--timeline", svg.to_str().unwrap()]].concat());
    assert_eq!(code, 1, "{err}");
    let timeline = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&timeline).unwrap();
    let panel = doc.descendants().find(|n| n.attribute("data-model") == Some("sync")).unwrap();
    let text: String = panel.descendants().filter_map(|n| n.text()).collect();
    assert!(text.contains("stopped: the run took longer than --run-limit"), "{text}");
    let bars = panel.descendants().filter(|n| n.attribute("class") == Some("bar")).count();
    assert!((1..=5).contains(&bars), "{bars} requests drawn: {timeline}");
}
