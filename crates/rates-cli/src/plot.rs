//! Charts as SVG files, shared by `rates bench` (one bar per model) and
//! `rates history` (one line per currency).
//!
//! Only the SVG backend of `plotters` is built: SVG leaves text to the
//! viewer, so no font is bundled or loaded. PNG would need a font backend
//! and an image encoder, so `--plot` takes `.svg` files only.

use std::path::Path;

use chrono::NaiveDate;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::Usage;
use crate::output::OutFile;

/// Checks, before any work, that `path` names an SVG file that can be
/// written, and makes ready to write it.
pub(crate) fn svg_file(flag: &str, path: &Path) -> Result<OutFile, Usage> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("svg") => OutFile::create(flag, path),
        _ => Err(Usage(format!("{flag}: '{}' is not an .svg file (only SVG charts are drawn)", path.display()))),
    }
}

/// One bar of a bar chart: a labelled value, or a note where there is none.
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    /// The category, e.g. a model's name.
    pub label: String,
    /// The bar's length; `None` draws `note` instead of a bar.
    pub value: Option<f64>,
    /// Text written after the bar (or in its place).
    pub note: String,
}

const BAR: RGBColor = RGBColor(0x4c, 0x72, 0xb0);
const BEST: RGBColor = RGBColor(0x55, 0xa8, 0x68);

/// A horizontal bar chart, first bar at the top; the shortest bar is drawn
/// in green. `x_desc` names the axis (what the values are, and which way is
/// better).
pub(crate) fn bars(out: OutFile, title: &str, x_desc: &str, bars: &[Bar]) -> anyhow::Result<()> {
    let mut svg = String::new();
    draw_bars(&mut svg, title, x_desc, bars)?;
    out.commit(svg.as_bytes())
}

fn draw_bars(svg: &mut String, title: &str, x_desc: &str, bars: &[Bar]) -> anyhow::Result<()> {
    let height = 120 + 42 * bars.len() as u32;
    let root = SVGBackend::with_string(svg, (960, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = bars.len().max(1);
    let max = bars.iter().filter_map(|b| b.value).fold(0.0_f64, f64::max);
    // Room to the right of the longest bar for its note.
    let x_max = if max > 0.0 { max * 1.6 } else { 1.0 };
    let best = bars.iter().filter_map(|b| b.value).fold(f64::INFINITY, f64::min);

    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(150)
        // A discrete range includes its end: 0..n-1 is n rows.
        .build_cartesian_2d(0.0..x_max, (0..n - 1).into_segmented())?;
    // Row 0 at the top: the axis counts upwards.
    let row = |i: usize| n - 1 - i;
    let label_of = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) if *i < n => bars.get(row(*i)).map(|b| b.label.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_max_light_lines(1)
        .y_labels(n)
        .y_label_formatter(&label_of)
        .label_style(("sans-serif", 15))
        .x_desc(x_desc)
        .axis_desc_style(("sans-serif", 15))
        .draw()?;

    let note_style = TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, bar) in bars.iter().enumerate() {
        let y = row(i);
        let end = bar.value.unwrap_or(0.0);
        if let Some(v) = bar.value {
            let colour = if v == best { BEST } else { BAR };
            let mut rect =
                Rectangle::new([(0.0, SegmentValue::Exact(y)), (v, SegmentValue::Exact(y + 1))], colour.filled());
            rect.set_margin(6, 6, 0, 0);
            chart.draw_series(std::iter::once(rect))?;
        }
        let at = (end + x_max * 0.01, SegmentValue::CenterOf(y));
        chart.draw_series(std::iter::once(Text::new(bar.note.clone(), at, note_style.clone())))?;
    }
    root.present()?;
    Ok(())
}

/// One panel of a line chart: a named series over time. A `None` value
/// is a day without data: the line breaks there instead of joining its
/// neighbours across the gap.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// The panel's caption, e.g. a currency.
    pub name: String,
    /// What the values measure, for the y axis, e.g. `EUR per 1 USD`.
    pub unit: String,
    /// The points in date order.
    pub points: Vec<(NaiveDate, Option<f64>)>,
}

/// Line charts over time, one panel per series stacked vertically (each
/// with its own scale: currencies differ by orders of magnitude).
pub(crate) fn lines(out: OutFile, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let mut svg = String::new();
    draw_lines(&mut svg, title, series)?;
    out.commit(svg.as_bytes())
}

/// The runs of consecutive known values of `points`: what is drawn as one
/// unbroken line each.
fn segments(points: &[(NaiveDate, Option<f64>)]) -> Vec<Vec<(NaiveDate, f64)>> {
    let mut out: Vec<Vec<(NaiveDate, f64)>> = Vec::new();
    let mut open = false;
    for &(day, value) in points {
        match value {
            Some(v) if open => out.last_mut().into_iter().for_each(|s| s.push((day, v))),
            Some(v) => {
                out.push(vec![(day, v)]);
                open = true;
            }
            None => open = false,
        }
    }
    out
}

fn draw_lines(svg: &mut String, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let panels = series.len().max(1);
    let root = SVGBackend::with_string(svg, (960, 60 + 280 * panels as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let areas = root.split_evenly((panels, 1));
    for (s, area) in series.iter().zip(&areas) {
        let known = || s.points.iter().filter_map(|p| p.1);
        let (Some(&(first, _)), Some(&(last, _)), Some(_)) = (s.points.first(), s.points.last(), known().next()) else {
            area.draw(&Text::new(format!("{}: no data", s.name), (20, 20), ("sans-serif", 15)))?;
            continue;
        };
        let lo = known().fold(f64::INFINITY, f64::min);
        let hi = known().fold(f64::NEG_INFINITY, f64::max);
        let pad = if hi > lo { (hi - lo) * 0.05 } else { hi.abs().max(1.0) * 0.01 };
        let last = if last > first { last } else { last + chrono::Days::new(1) };
        let mut chart = ChartBuilder::on(area)
            .caption(&s.name, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(90)
            .build_cartesian_2d(first..last, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(6)
            .max_light_lines(2)
            .label_style(("sans-serif", 13))
            .x_desc("date")
            .y_desc(&s.unit)
            .axis_desc_style(("sans-serif", 14))
            .draw()?;
        for segment in segments(&s.points) {
            if let [only] = segment[..] {
                // A day alone between gaps: a dot, or it would not show.
                chart.draw_series(std::iter::once(Circle::new(only, 2, BAR.filled())))?;
            } else {
                chart.draw_series(LineSeries::new(segment, BAR.stroke_width(2)))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        rates::parse_date(s).unwrap_or_default()
    }

    #[test]
    fn lines_break_at_missing_days() {
        let p = [
            (d("2020-01-01"), Some(1.0)),
            (d("2020-01-02"), Some(2.0)),
            (d("2020-01-03"), None),
            (d("2020-01-06"), Some(3.0)),
            (d("2020-01-07"), None),
            (d("2020-01-08"), None),
            (d("2020-01-09"), Some(4.0)),
            (d("2020-01-10"), Some(5.0)),
        ];
        let want = vec![
            vec![(d("2020-01-01"), 1.0), (d("2020-01-02"), 2.0)],
            vec![(d("2020-01-06"), 3.0)],
            vec![(d("2020-01-09"), 4.0), (d("2020-01-10"), 5.0)],
        ];
        assert_eq!(segments(&p), want);
        assert!(segments(&[(d("2020-01-01"), None)]).is_empty());
    }
}
