//! Charts as SVG files, shared by `rates bench` (one bar per model) and
//! `rates history` (one line per currency), and the round ticks of a value
//! axis that `rates bench`'s timelines use too.
//!
//! Only the SVG backend of `plotters` is built: SVG leaves text to the
//! viewer, so no font is bundled or loaded. PNG would need a font backend
//! and an image encoder, so `--plot` takes `.svg` files only.

use std::path::Path;

use chrono::NaiveDate;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged, SegmentValue};
use plotters::coord::types::{RangedCoordf64, RangedDate};
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

/// A horizontal bar chart as the text of an SVG document, first bar at
/// the top; the shortest bar is drawn in green. `x_desc` names the axis
/// (what the values are, and which way is better).
pub(crate) fn bars_svg(title: &str, x_desc: &str, bars: &[Bar]) -> anyhow::Result<String> {
    let mut svg = String::new();
    draw_bars(&mut svg, title, x_desc, bars)?;
    Ok(svg)
}

/// The chart's width, and the bar chart's label column.
const WIDTH: u32 = 960;
const BAR_LABELS: u32 = 150;
const BAR_MARGIN: u32 = 12;
/// About the width of one character of the notes' 14-pixel font.
const NOTE_CHAR_PX: f64 = 7.5;

fn draw_bars(svg: &mut String, title: &str, x_desc: &str, bars: &[Bar]) -> anyhow::Result<()> {
    let height = 120 + 42 * bars.len() as u32;
    let root = SVGBackend::with_string(svg, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = bars.len().max(1);
    let max = bars.iter().filter_map(|b| b.value).fold(0.0_f64, f64::max);
    // The axis ends at the first labelled tick past the longest bar.
    let ticks = Ticks::new(0.0, if max > 0.0 { max } else { 1.0 }, 6);
    let x_max = ticks.range.end;
    let best = bars.iter().filter_map(|b| b.value).fold(f64::INFINITY, f64::min);

    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(BAR_MARGIN)
        .x_label_area_size(40)
        .y_label_area_size(BAR_LABELS)
        // A discrete range includes its end: 0..n-1 is n rows.
        .build_cartesian_2d(
            Ticked::<RangedCoordf64>::new(ticks.range.clone(), ticks.points.clone(), []),
            (0..n - 1).into_segmented(),
        )?;
    // Row 0 at the top: the axis counts upwards.
    let row = |i: usize| n - 1 - i;
    let label_of = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) if *i < n => bars.get(row(*i)).map(|b| b.label.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    let x_label = |v: &f64| ticks.label(*v);
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&label_of)
        .x_label_formatter(&x_label)
        .label_style(("sans-serif", 15))
        .x_desc(x_desc)
        .axis_desc_style(("sans-serif", 15))
        .draw()?;

    // A note goes after its bar, or inside it (in white) where the space
    // after it is too short.
    let plot_px = f64::from(WIDTH - BAR_LABELS - 2 * BAR_MARGIN);
    let after = TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let inside = TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Right, VPos::Center)).color(&WHITE);
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
        let note_px = bar.note.chars().count() as f64 * NOTE_CHAR_PX;
        let end_px = end / x_max * plot_px;
        let (at, style) = if end_px + note_px + 10.0 > plot_px && note_px + 10.0 < end_px {
            (end - x_max * 0.01, &inside)
        } else {
            (end + x_max * 0.01, &after)
        };
        let at = (at, SegmentValue::CenterOf(y));
        chart.draw_series(std::iter::once(Text::new(bar.note.clone(), at, style.clone())))?;
    }
    root.present()?;
    Ok(())
}

/// An axis whose ticks are given: `bold` are labelled and drawn as grid
/// lines, `light` as light lines only. (plotters' own `WithKeyPoints` does
/// the same but keeps the inner axis's formatting, which for floats
/// refuses a label formatter.)
struct Ticked<R: Ranged> {
    inner: R,
    bold: Vec<R::ValueType>,
    light: Vec<R::ValueType>,
}

impl<R: Ranged> Ticked<R> {
    fn new(
        range: std::ops::Range<R::ValueType>,
        bold: Vec<R::ValueType>,
        light: impl IntoIterator<Item = R::ValueType>,
    ) -> Self
    where
        std::ops::Range<R::ValueType>: Into<R>,
    {
        Ticked { inner: range.into(), bold, light: light.into_iter().collect() }
    }
}

impl<R: Ranged> Ranged for Ticked<R>
where
    R::ValueType: Clone,
{
    type FormatOption = DefaultFormatting;
    type ValueType = R::ValueType;

    fn map(&self, value: &Self::ValueType, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<Self::ValueType> {
        if hint.weight().allow_light_points() { self.light.clone() } else { self.bold.clone() }
    }

    fn range(&self) -> std::ops::Range<Self::ValueType> {
        self.inner.range()
    }

    fn axis_pixel_range(&self, limit: (i32, i32)) -> std::ops::Range<i32> {
        self.inner.axis_pixel_range(limit)
    }
}

/// The labelled ticks of a value axis: a round step (1, 2, 2.5 or 5 times
/// a power of ten) giving about `n` intervals, and the range widened to
/// whole steps, so the labels reach both ends of the axis.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ticks {
    pub(crate) range: std::ops::Range<f64>,
    pub(crate) points: Vec<f64>,
    /// Decimals the labels need.
    decimals: usize,
}

impl Ticks {
    pub(crate) fn new(lo: f64, hi: f64, n: usize) -> Ticks {
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - lo.abs().max(1.0) * 0.01, hi + hi.abs().max(1.0) * 0.01) };
        let raw = (hi - lo) / n.max(1) as f64;
        let magnitude = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(raw);
        let (first, last) = ((lo / step).floor() as i64, (hi / step).ceil() as i64);
        // Multiples of the step, so 0.1 + 0.2 noise never shows in a label.
        let points: Vec<f64> = (first..=last).map(|k| k as f64 * step).collect();
        let decimals = (-(step.log10().floor()) as i64 + i64::from(step / magnitude == 2.5)).max(0) as usize;
        Ticks { range: first as f64 * step..last as f64 * step, points, decimals }
    }

    pub(crate) fn label(&self, v: f64) -> String {
        format!("{v:.*}", self.decimals)
    }
}

/// The ticks of a date axis from `first` to `last`: weeks (Mondays),
/// months or years, by the span; the range widened to the enclosing month
/// or year, so the labels reach the ends. Returns (range, labelled ticks,
/// light ticks, label format).
fn date_ticks(
    first: NaiveDate,
    last: NaiveDate,
) -> (std::ops::Range<NaiveDate>, Vec<NaiveDate>, Vec<NaiveDate>, &'static str) {
    use chrono::{Datelike, Months};
    let span = (last - first).num_days();
    if span <= 70 {
        let monday = |d: NaiveDate| d - chrono::Days::new(u64::from(d.weekday().num_days_from_monday()));
        let (start, end) = (monday(first), monday(last) + chrono::Days::new(7));
        let bold = start.iter_weeks().take_while(|d| *d <= end).collect();
        return (start..end, bold, Vec::new(), "%Y-%m-%d");
    }
    let month_of = |d: NaiveDate| NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap_or(d);
    if span <= 2 * 366 {
        let (start, end) = (month_of(first), month_of(last) + Months::new(1));
        let months = (0..).map(|i| start + Months::new(i)).take_while(|d| *d <= end);
        let step = [1, 2, 3, 6].into_iter().find(|m| span / 30 / i64::from(*m) <= 12).unwrap_or(6);
        let (bold, light) = months.partition(|d| d.month0() % step == 0);
        return (start..end, bold, light, "%Y-%m");
    }
    let year_of = |d: NaiveDate| NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap_or(d);
    let (start, end) = (year_of(first), year_of(last) + Months::new(12));
    let years = (0..).map(|i| start + Months::new(12 * i)).take_while(|d| *d <= end);
    let step = [1, 2, 5, 10].into_iter().find(|y| span / 365 / i64::from(*y) <= 12).unwrap_or(10);
    let (bold, light) = years.partition(|d| d.year() % step == 0);
    (start..end, bold, light, "%Y")
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
        let y = Ticks::new(lo, hi, 5);
        let (x_range, x_bold, x_light, x_format) = date_ticks(first, last);
        let y_light: Vec<f64> = y.points.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(&s.name, ("sans-serif", 16))
            .margin(10)
            .margin_right(30)
            .x_label_area_size(45)
            .y_label_area_size(90)
            .build_cartesian_2d(
                Ticked::<RangedDate<NaiveDate>>::new(x_range, x_bold, x_light),
                Ticked::<RangedCoordf64>::new(y.range.clone(), y.points.clone(), y_light),
            )?;
        let x_label = |d: &NaiveDate| d.format(x_format).to_string();
        let y_label = |v: &f64| y.label(*v);
        chart
            .configure_mesh()
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .label_style(("sans-serif", 13))
            .x_desc("date")
            .y_desc(&s.unit)
            .axis_desc_style(("sans-serif", 14))
            .draw()?;
        for segment in segments(&s.points) {
            if let [only] = segment[..] {
                // A day alone between gaps: a dot, or it would not show.
                chart.draw_series(std::iter::once(Circle::new(only, 3, BAR.filled())))?;
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
        rates_core::parse_date(s).unwrap_or_default()
    }

    #[test]
    fn value_ticks_are_round_and_reach_both_ends() {
        let t = Ticks::new(3.61, 4.27, 5);
        assert_eq!(t.range, 3.6..4.4);
        assert_eq!(t.points.iter().map(|v| t.label(*v)).collect::<Vec<_>>(), ["3.6", "3.8", "4.0", "4.2", "4.4"]);
        let t = Ticks::new(0.0, 21.38, 6);
        assert_eq!((t.range.end, t.label(25.0).as_str()), (25.0, "25"));
        let t = Ticks::new(0.81, 0.935, 5);
        assert!((t.range.start - 0.8).abs() < 1e-12 && (t.range.end - 0.95).abs() < 1e-12, "{t:?}");
        assert_eq!(t.label(t.points[1]), "0.825");
        // A flat series still has a range.
        let t = Ticks::new(1.0, 1.0, 5);
        assert!(t.range.start < 1.0 && t.range.end > 1.0, "{t:?}");
    }

    #[test]
    fn date_ticks_are_weeks_months_or_years_covering_the_range() {
        let (range, bold, _, format) = date_ticks(d("2020-03-04"), d("2020-03-27"));
        assert_eq!((range.start, range.end, format), (d("2020-03-02"), d("2020-03-30"), "%Y-%m-%d"));
        assert_eq!(bold, [d("2020-03-02"), d("2020-03-09"), d("2020-03-16"), d("2020-03-23"), d("2020-03-30")]);
        let (range, bold, light, format) = date_ticks(d("2020-01-02"), d("2020-12-31"));
        assert_eq!((range.start, range.end, format), (d("2020-01-01"), d("2021-01-01"), "%Y-%m"));
        assert_eq!((bold.len(), light.len()), (13, 0));
        let (range, bold, _, format) = date_ticks(d("1999-01-04"), d("2025-11-28"));
        assert_eq!((range.start, range.end, format), (d("1999-01-01"), d("2026-01-01"), "%Y"));
        assert_eq!(bold.first().copied(), Some(d("2000-01-01")));
        assert!(bold.len() <= 13 && bold.last() == Some(&d("2025-01-01")), "{bold:?}");
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
