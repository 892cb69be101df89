//! `rates bench --timeline`: what each model did, drawn from one run's
//! trace as an SVG document written by hand (rectangles and a little text).
//!
//! One panel per model, one lane per track that made requests (a thread,
//! a worker process, an async slot), in the order the lanes were first
//! used; each request attempt is a bar from its start to its answer,
//! coloured by how it ended, and the waits before requests (throttle,
//! limiter, `Retry-After`, backoff) are bars of another colour. Every
//! panel has the same time axis, 0 being the run's first event, so the
//! models compare at a glance. Past [`DENSITY_PAST`] lanes (a thread per
//! item of a large run) the lanes would be under a pixel each, so the
//! panel shows the requests in flight over time instead.
//!
//! Bars of one kind closer than half a pixel are drawn as one, so the
//! document's size follows its pixels, not the number of requests.

use std::fmt::Write as _;

use super::traces::{Kind, RunTrace, Span};
use crate::plot::Ticks;

/// One model's panel: its trace, or why it has none, and a note on the
/// run (e.g. that it was stopped).
#[derive(Debug, Clone)]
pub(super) struct Panel {
    pub(super) model: String,
    pub(super) trace: Result<RunTrace, String>,
    pub(super) note: Option<String>,
}

/// Past this many lanes a panel shows requests in flight instead.
pub(super) const DENSITY_PAST: usize = 200;

const WIDTH: f64 = 960.0;
/// The left column, for lane names and the in-flight scale.
const LEFT: f64 = 180.0;
const RIGHT: f64 = 24.0;
const PLOT: f64 = WIDTH - LEFT - RIGHT;
/// The height the lanes of a panel aim at, and a lane's bounds.
const LANES_TARGET: f64 = 240.0;
const LANE_MAX: f64 = 16.0;
const LANE_MIN: f64 = 1.2;
/// The height of a panel drawn as requests in flight.
const BAND: f64 = 120.0;
/// Above a panel's lanes (its heading) and below them (the tick labels).
const HEAD: f64 = 24.0;
const FOOT: f64 = 24.0;
/// Where the title, the subtitle and the legend start.
const MARGIN: f64 = 24.0;
/// Where the first panel starts when the legend is one row.
const TOP: f64 = 88.0;
const LEGEND_ROW: f64 = 18.0;

const ANSWERED: &str = "#4c72b0";
const TOO_MANY: &str = "#c44e52";
const FAILED: &str = "#dd8452";
const WAIT: &str = "#b9a7e0";
const GRID: &str = "#e3e3e3";
const MUTED: &str = "#666666";

fn colour(kind: Kind) -> &'static str {
    match kind {
        Kind::Wait => WAIT,
        Kind::Answered => ANSWERED,
        Kind::Failed => FAILED,
        Kind::TooMany => TOO_MANY,
    }
}

/// `s` as XML text or attribute value.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `n` characters of `s`, with an ellipsis if cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_owned() } else { format!("{}…", s.chars().take(n - 1).collect::<String>()) }
}

/// The height of one lane of a panel of `lanes` lanes.
fn lane_height(lanes: usize) -> f64 {
    (LANES_TARGET / lanes.max(1) as f64).clamp(LANE_MIN, LANE_MAX)
}

/// The height of a panel's drawing area (lanes or band).
fn body_height(panel: &Panel) -> f64 {
    match &panel.trace {
        Ok(t) if t.tracks.len() > DENSITY_PAST => BAND,
        Ok(t) if !t.tracks.is_empty() => lane_height(t.tracks.len()) * t.tracks.len() as f64,
        _ => 16.0,
    }
}

/// `spans` of one kind, sorted, a span joined to the one before it when
/// they are less than `gap` apart and either is shorter than `short`:
/// bars too thin to tell apart are drawn as one, and wider ones each.
fn joined(spans: impl Iterator<Item = Span>, gap: f64, short: f64) -> Vec<Span> {
    let mut v: Vec<Span> = spans.collect();
    v.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut out: Vec<Span> = Vec::with_capacity(v.len());
    for s in v {
        match out.last_mut() {
            Some(last) if s.start <= last.end + gap && (last.end - last.start < short || s.end - s.start < short) => {
                last.end = last.end.max(s.end)
            }
            _ => out.push(s),
        }
    }
    out
}

/// The most requests in flight within each of `columns` columns of
/// `us_per_column` µs, from the request bars of `trace`.
fn in_flight(trace: &RunTrace, columns: usize, us_per_column: f64) -> Vec<u32> {
    let mut steps: Vec<(f64, i32)> = trace
        .tracks
        .iter()
        .flat_map(|t| &t.spans)
        .filter(|s| s.kind != Kind::Wait)
        .flat_map(|s| [(s.start, 1), (s.end, -1)])
        .collect();
    // An end before a start at the same time: back to back is not overlap.
    steps.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut out = Vec::with_capacity(columns);
    let (mut now, mut next) = (0_i32, steps.iter().peekable());
    for c in 0..columns {
        let (start, end) = (c as f64 * us_per_column, (c + 1) as f64 * us_per_column);
        // What changes at the column's very start is its first count.
        while let Some(&&(t, d)) = next.peek() {
            if t > start {
                break;
            }
            now += d;
            next.next();
        }
        let mut most = now;
        while let Some(&&(t, d)) = next.peek() {
            if t >= end {
                break;
            }
            now += d;
            most = most.max(now);
            next.next();
        }
        out.push(u32::try_from(most.max(0)).unwrap_or(0));
    }
    out
}

/// The timelines of `panels` as an SVG document, titled `title` with
/// `subtitle` under it.
pub(super) fn svg(title: &str, subtitle: &str, panels: &[Panel]) -> String {
    let span_us = panels.iter().filter_map(|p| p.trace.as_ref().ok()).map(|t| t.length).fold(0.0, f64::max);
    let ticks = Ticks::new(0.0, if span_us > 0.0 { span_us / 1e6 } else { 1.0 }, 8);
    let axis_end_us = ticks.range.end * 1e6;
    let px_per_us = PLOT / axis_end_us;
    let density = panels.iter().any(|p| p.trace.as_ref().is_ok_and(|t| t.tracks.len() > DENSITY_PAST));
    let (legend, legend_rows) = legend(density);
    let top = TOP + (legend_rows - 1) as f64 * LEGEND_ROW;
    let height = top + panels.iter().map(|p| HEAD + body_height(p) + FOOT).sum::<f64>() + 30.0;

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif">"#
    );
    let _ = write!(s, r##"<rect class="background" width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = write!(s, r#"<text x="{MARGIN}" y="26" font-size="17" font-weight="bold">{}</text>"#, escape(title));
    let _ = write!(s, r#"<text x="{MARGIN}" y="45" font-size="12" fill="{MUTED}">{}</text>"#, escape(subtitle));
    s.push_str(&legend);

    let mut y = top;
    for panel in panels {
        let body = body_height(panel);
        panel_svg(&mut s, panel, y, body, &ticks, px_per_us);
        y += HEAD + body + FOOT;
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="{MUTED}">seconds from the run's first event (the same scale in every panel)</text>"#,
        LEFT + PLOT / 2.0,
        y + 10.0
    );
    s.push_str("</svg>\n");
    s
}

/// The legend, and the rows it takes.
fn legend(density: bool) -> (String, usize) {
    let mut items = vec![
        (ANSWERED, "request answered"),
        (TOO_MANY, "answered 429"),
        (FAILED, "failed (error or other status)"),
        (WAIT, "wait: throttle, limit, Retry-After, backoff"),
    ];
    if density {
        items.push((ANSWERED, "past 200 lanes: requests in flight"));
    }
    let (mut x, mut rows) = (MARGIN, 1);
    let mut s = String::from(r#"<g class="legend" font-size="12">"#);
    for (fill, label) in items {
        let width = 16.0 + label.chars().count() as f64 * 5.9;
        if x > MARGIN && x + width > WIDTH - RIGHT {
            (x, rows) = (MARGIN, rows + 1);
        }
        let y = 58.0 + (rows - 1) as f64 * LEGEND_ROW;
        let _ = write!(s, r#"<rect x="{x:.1}" y="{y:.1}" width="12" height="12" fill="{fill}"/>"#);
        let _ = write!(s, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, x + 16.0, y + 10.5, escape(label));
        x += width + 18.0;
    }
    s.push_str("</g>");
    (s, rows)
}

fn panel_svg(s: &mut String, panel: &Panel, y: f64, body: f64, ticks: &Ticks, px_per_us: f64) {
    let top = y + HEAD;
    let _ = write!(s, r#"<g class="panel" data-model="{}">"#, escape(&panel.model));
    let mut heading = format!(r#"<tspan font-weight="bold">{}</tspan>"#, escape(&panel.model));
    if let Ok(t) = &panel.trace {
        let requests = t.tracks.iter().flat_map(|t| &t.spans).filter(|s| s.kind != Kind::Wait);
        let (n, too_many, failed) = requests.fold((0, 0, 0), |(n, m, f), s| {
            (n + 1, m + usize::from(s.kind == Kind::TooMany), f + usize::from(s.kind == Kind::Failed))
        });
        let lanes = t.tracks.len();
        let _ = write!(
            heading,
            r#"<tspan fill="{MUTED}">  {lanes} lane{} · {n} request attempt{}"#,
            if lanes == 1 { "" } else { "s" },
            if n == 1 { "" } else { "s" }
        );
        if too_many > 0 {
            let _ = write!(heading, " · {too_many} answered 429");
        }
        if failed > 0 {
            let _ = write!(heading, " · {failed} failed");
        }
        let _ = write!(heading, " · {}</tspan>", super::render::secs(t.length / 1e6));
    }
    if let Some(note) = &panel.note {
        let _ = write!(heading, r#"<tspan fill="{TOO_MANY}">  {}</tspan>"#, escape(&clip(note, 90)));
    }
    let _ = write!(s, r#"<text x="{LEFT}" y="{:.1}" font-size="13">{heading}</text>"#, y + 16.0);

    let trace = match &panel.trace {
        Ok(t) if !t.tracks.is_empty() => t,
        Ok(_) => return no_trace(s, top, "no request in the trace"),
        Err(why) => return no_trace(s, top, why),
    };
    // The grid, then the frame, then what happened.
    for &t in &ticks.points {
        let x = LEFT + t * 1e6 * px_per_us;
        let _ = write!(s, r#"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{:.1}" stroke="{GRID}"/>"#, top + body);
        let _ = write!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="{MUTED}">{}</text>"#,
            top + body + 13.0,
            ticks.label(t)
        );
    }
    let _ = write!(
        s,
        r##"<rect class="frame" x="{LEFT}" y="{top:.1}" width="{PLOT}" height="{body:.1}" fill="none" stroke="#bbbbbb"/>"##
    );
    if trace.tracks.len() > DENSITY_PAST {
        density(s, trace, top, px_per_us);
    } else {
        lanes(s, trace, top, px_per_us);
    }
    s.push_str("</g>");
}

fn no_trace(s: &mut String, top: f64, why: &str) {
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="{:.1}" font-size="12" fill="{MUTED}">no trace: {}</text></g>"#,
        top + 12.0,
        escape(&clip(why, 110))
    );
}

fn lanes(s: &mut String, trace: &RunTrace, top: f64, px_per_us: f64) {
    let h = lane_height(trace.tracks.len());
    let bar = if h >= 6.0 { h - 3.0 } else { (h * 0.8).max(1.0) };
    let (half_pixel_us, two_pixels_us) = (0.5 / px_per_us, 2.0 / px_per_us);
    for (i, track) in trace.tracks.iter().enumerate() {
        let lane_top = top + i as f64 * h;
        let bar_top = lane_top + (h - bar) / 2.0;
        s.push_str(r#"<g class="lane">"#);
        if h >= 10.0 {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="{MUTED}">{}</text>"#,
                LEFT - 6.0,
                lane_top + h / 2.0 + 3.5,
                escape(&clip(&track.name, 30))
            );
        }
        for kind in [Kind::Wait, Kind::Answered, Kind::Failed, Kind::TooMany] {
            let spans = track.spans.iter().copied().filter(|s| s.kind == kind);
            for span in joined(spans, half_pixel_us, two_pixels_us) {
                let x = LEFT + span.start * px_per_us;
                // A pixel's gap after a wide bar, so back-to-back requests show apart.
                let w = (span.end - span.start) * px_per_us;
                // A failure is at least 2 pixels wide: a 429 comes back at once.
                let least = if kind == Kind::Answered || kind == Kind::Wait { 1.0 } else { 2.0 };
                let w = if w >= 3.0 { w - 1.0 } else { w.max(least) }.min(LEFT + PLOT - x);
                let _ = write!(
                    s,
                    r#"<rect class="bar" x="{x:.1}" y="{bar_top:.1}" width="{w:.1}" height="{bar:.1}" fill="{}"/>"#,
                    colour(kind)
                );
            }
        }
        for mark in &track.marks {
            let x = LEFT + mark.at * px_per_us;
            let stroke = if mark.too_many { TOO_MANY } else { "#222222" };
            let _ = write!(
                s,
                r#"<line class="mark" x1="{x:.1}" y1="{lane_top:.1}" x2="{x:.1}" y2="{:.1}" stroke="{stroke}" stroke-width="2"/>"#,
                lane_top + h
            );
        }
        s.push_str("</g>");
    }
    if h < 10.0 {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="{MUTED}">{} lanes</text>"#,
            LEFT - 6.0,
            top + 10.0,
            trace.tracks.len()
        );
    }
}

/// Requests in flight over time, one column a pixel, and ticks under the
/// band for 429s and failures.
fn density(s: &mut String, trace: &RunTrace, top: f64, px_per_us: f64) {
    let columns = PLOT as usize;
    let flight = in_flight(trace, columns, 1.0 / px_per_us);
    let peak = flight.iter().copied().max().unwrap_or(0).max(1);
    let base = top + BAND - 8.0;
    let scale = (BAND - 12.0) / f64::from(peak);
    let mut path = format!("M{LEFT:.1},{base:.1}");
    for (c, n) in flight.iter().enumerate() {
        let y = base - f64::from(*n) * scale;
        let _ = write!(path, " L{:.1},{y:.1} L{:.1},{y:.1}", LEFT + c as f64, LEFT + c as f64 + 1.0);
    }
    let _ = write!(path, " L{:.1},{base:.1} Z", LEFT + PLOT);
    let _ = write!(s, r#"<g class="density"><path d="{path}" fill="{ANSWERED}"/>"#);
    for kind in [Kind::Failed, Kind::TooMany] {
        let ends = trace.tracks.iter().flat_map(|t| &t.spans).filter(|s| s.kind == kind);
        let ticks = joined(ends.map(|s| Span { start: s.end, end: s.end, kind }), 0.5 / px_per_us, 1.0 / px_per_us);
        for span in ticks {
            let x = LEFT + span.start * px_per_us;
            let _ = write!(
                s,
                r#"<rect class="bar" x="{x:.1}" y="{:.1}" width="1" height="6" fill="{}"/>"#,
                base + 1.0,
                colour(kind)
            );
        }
    }
    let label = |s: &mut String, y: f64, text: &str| {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{y:.1}" font-size="10" text-anchor="end" fill="{MUTED}">{text}</text>"#,
            LEFT - 6.0
        );
    };
    label(s, base - f64::from(peak) * scale + 4.0, &format!("{peak} in flight"));
    label(s, base + 3.0, "0");
    label(s, top + BAND / 2.0 + 3.0, &format!("{} lanes", trace.tracks.len()));
    s.push_str("</g>");
}

#[cfg(test)]
mod tests {
    use super::super::traces::{Mark, Track};
    use super::*;

    fn track(name: &str, spans: &[(f64, f64, Kind)]) -> Track {
        Track {
            name: name.into(),
            spans: spans.iter().map(|&(start, end, kind)| Span { start, end, kind }).collect(),
            marks: vec![],
        }
    }

    /// `lanes` lanes of `per_lane` 50 ms requests each, back to back.
    fn run(lanes: usize, per_lane: usize) -> RunTrace {
        let tracks: Vec<Track> = (0..lanes)
            .map(|l| {
                let spans: Vec<(f64, f64, Kind)> =
                    (0..per_lane).map(|k| (k as f64 * 50_000.0, (k + 1) as f64 * 50_000.0, Kind::Answered)).collect();
                track(&format!("worker {l}"), &spans)
            })
            .collect();
        RunTrace { tracks, length: per_lane as f64 * 50_000.0 }
    }

    fn of_class<'a, 'i>(n: roxmltree::Node<'a, 'i>, class: &str) -> Vec<roxmltree::Node<'a, 'i>> {
        n.descendants().filter(|d| d.attribute("class") == Some(class)).collect()
    }

    fn attr(n: roxmltree::Node, name: &str) -> f64 {
        n.attribute(name).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
    }

    #[test]
    fn one_panel_a_model_one_lane_a_track_and_bars_inside_their_panel() {
        let mut pool = run(4, 5);
        pool.tracks[1].spans.push(Span { start: 250_000.0, end: 300_000.0, kind: Kind::TooMany });
        pool.tracks[1].spans.push(Span { start: 300_000.0, end: 400_000.0, kind: Kind::Wait });
        pool.tracks[1].marks.push(Mark { at: 300_000.0, too_many: true });
        let panels = [
            Panel { model: "sync".into(), trace: Ok(run(1, 20)), note: None },
            Panel { model: "thread-pool".into(), trace: Ok(pool), note: None },
            Panel { model: "async".into(), trace: Err("the run failed".into()), note: None },
        ];
        let text = svg("timelines", "20 requests", &panels);
        let doc = roxmltree::Document::parse(&text).expect("the SVG is XML");
        let root = doc.root_element();
        assert_eq!((attr(root, "width"), root.attribute("viewBox").is_some()), (960.0, true));
        let got: Vec<_> = of_class(root, "panel");
        assert_eq!(got.len(), 3);
        assert_eq!(
            got.iter().map(|p| of_class(*p, "lane").len()).collect::<Vec<_>>(),
            [1, 4, 0],
            "a lane for each track, none for a run without a trace"
        );
        for panel in &got[..2] {
            let frame = of_class(*panel, "frame")[0];
            let (x0, y0) = (attr(frame, "x"), attr(frame, "y"));
            let (x1, y1) = (x0 + attr(frame, "width"), y0 + attr(frame, "height"));
            let bars = of_class(*panel, "bar");
            assert!(!bars.is_empty());
            for b in bars {
                let (x, y, w, h) = (attr(b, "x"), attr(b, "y"), attr(b, "width"), attr(b, "height"));
                assert!(x >= x0 && x + w <= x1 + 0.05 && y >= y0 && y + h <= y1 + 0.05, "{b:?} outside {frame:?}");
            }
        }
        // The same axis in every panel: 1 s (sync's 20 × 50 ms) ends both.
        let sync_last = of_class(got[0], "bar").iter().map(|b| attr(*b, "x") + attr(*b, "width")).fold(0.0, f64::max);
        assert!((sync_last - (LEFT + PLOT)).abs() <= 1.05, "{sync_last}");
        assert!(text.contains(TOO_MANY) && text.contains(WAIT) && text.contains("no trace: the run failed"));
        assert_eq!(of_class(got[1], "mark").len(), 1);
    }

    #[test]
    fn past_the_lane_limit_a_panel_is_a_band_of_requests_in_flight() {
        let panels = [
            Panel { model: "thread-per-item".into(), trace: Ok(run(DENSITY_PAST + 1, 1)), note: None },
            Panel { model: "thread-pool".into(), trace: Ok(run(DENSITY_PAST, 1)), note: None },
        ];
        let text = svg("t", "s", &panels);
        let doc = roxmltree::Document::parse(&text).expect("the SVG is XML");
        let panels = of_class(doc.root_element(), "panel");
        let count = |p, c| of_class(p, c).len();
        assert_eq!((count(panels[0], "density"), count(panels[0], "lane")), (1, 0));
        assert_eq!((count(panels[1], "density"), count(panels[1], "lane")), (0, DENSITY_PAST));
        assert!(text.contains(&format!("{} in flight", DENSITY_PAST + 1)));
    }

    #[test]
    fn in_flight_counts_overlaps_per_column() {
        let t = RunTrace {
            tracks: vec![
                track("a", &[(0.0, 10.0, Kind::Answered), (10.0, 20.0, Kind::Answered)]),
                track("b", &[(5.0, 15.0, Kind::Answered), (15.0, 30.0, Kind::Wait)]),
            ],
            length: 30.0,
        };
        // Back to back on `a` is one at a time; the wait is not in flight.
        assert_eq!(in_flight(&t, 3, 10.0), [2, 2, 0]);
    }

    #[test]
    fn bars_too_thin_to_tell_apart_are_one() {
        let many: Vec<(f64, f64, Kind)> = (0..10_000).map(|k| (k as f64, k as f64 + 0.5, Kind::Answered)).collect();
        let trace = RunTrace { tracks: vec![track("w", &many)], length: 10_000.0 };
        let text = svg("t", "s", &[Panel { model: "m".into(), trace: Ok(trace), note: None }]);
        let bars = text.matches(r#"class="bar""#).count();
        assert!((1..=PLOT as usize).contains(&bars), "{bars} bars");
        let spans = |v: &[(f64, f64)]| v.iter().map(|&(start, end)| Span { start, end, kind: Kind::Wait }).collect();
        let short: Vec<Span> = spans(&[(0.0, 1.0), (1.2, 2.0), (3.0, 4.0)]);
        assert_eq!(joined(short.into_iter(), 0.5, 2.0), spans(&[(0.0, 2.0), (3.0, 4.0)]));
        // Wide bars back to back stay apart.
        let wide: Vec<Span> = spans(&[(0.0, 10.0), (10.0, 20.0)]);
        assert_eq!(joined(wide.clone().into_iter(), 0.5, 2.0), wide);
    }
}
