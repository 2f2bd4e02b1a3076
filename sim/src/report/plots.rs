//! The four plots of a sweep, each written as PNG and SVG.
//!
//! Text uses DejaVu Sans embedded from `sim/assets` (licence beside it), registered with
//! plotters' `ab_glyph` backend, so no system font is needed. Legends sit in their own strip
//! beside the axes ([`side_legend`]), so they never cover data.

use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::stats::{RunSummary, TimeSeries};

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Registers the embedded font as plotters' `sans-serif` (once per process).
pub fn register_font() {
    REGISTER.call_once(|| {
        // A failure here means the embedded file is not a font: a build bug, caught by tests.
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("embedded DejaVuSans.ttf is not a valid font"));
    });
}

const SIZE: (u32, u32) = (1200, 650);

/// Width of the legend strip beside a plot, in pixels.
const LEGEND_W: u32 = 230;

/// A policy's colour in every plot.
pub(super) fn color(policy: &str) -> RGBColor {
    match policy {
        "car" => RGBColor(200, 30, 30),
        "natural" => RGBColor(30, 140, 60),
        "gated" => RGBColor(150, 60, 180),
        "adaptive" => RGBColor(230, 130, 0),
        "window" => RGBColor(20, 90, 200),
        _ => RGBColor(90, 90, 90),
    }
}

pub(super) fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// Writes a plot function's PNG and SVG.
macro_rules! write_both {
    ($stem:expr, $size:expr, $func:ident ( $($arg:expr),* )) => {{
        let png = $stem.with_extension("png");
        let svg = $stem.with_extension("svg");
        $crate::report::png::render(&png, $size, |root| $func(root, $($arg),*))?;
        {
            let root = SVGBackend::new(&svg, $size).into_drawing_area();
            $func(&root, $($arg),*)?;
            root.present().map_err(err)?;
        }
        Ok::<(), anyhow::Error>(())
    }};
}
pub(super) use write_both;

/// How a legend entry is drawn.
#[derive(Debug, Clone, Copy)]
pub(super) enum Key {
    /// A line this many pixels wide.
    Line(u32),
    /// A filled circle.
    Circle,
    /// A filled triangle.
    Triangle,
    /// An open circle (a ring around a marker).
    Ring,
}

/// A legend in its own strip (`area`, beside the axes): an entry per line, from the top. It
/// never covers data, whatever the data does.
pub(super) fn side_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, RGBColor, Key)],
    font_size: u32,
) -> Result<()> {
    let step = font_size as i32 + 10;
    let top = 40;
    for (k, (text, c, key)) in entries.iter().enumerate() {
        let y = top + k as i32 * step;
        match *key {
            Key::Line(w) => area.draw(&PathElement::new(vec![(6, y), (30, y)], c.stroke_width(w))),
            Key::Circle => area.draw(&Circle::new((18, y), 5, c.filled())),
            Key::Triangle => area.draw(&TriangleMarker::new((18, y), 7, c.filled())),
            Key::Ring => area.draw(&Circle::new((18, y), 7, c.stroke_width(2))),
        }
        .map_err(err)?;
        area.draw(&Text::new(text.clone(), (36, y - font_size as i32 / 2 - 1), ("sans-serif", font_size)))
            .map_err(err)?;
    }
    Ok(())
}

/// `root` split into the plot (left) and the legend strip (right).
pub(super) fn with_legend_strip<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>) -> (DrawingArea<DB, Shift>, DrawingArea<DB, Shift>) {
    let (w, _) = root.dim_in_pixel();
    root.split_horizontally(w.saturating_sub(LEGEND_W))
}

pub(super) fn log_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| *v > 0.0 && v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.001..1.0;
    }
    // Some room around the data, then out to 1, 2 or 5 times a power of ten. plotters labels a
    // log axis only where a power of ten lies inside, and this range always holds one: a lower
    // end of 2 or 5 times 10^k means data at or above 3.2 × 10^k, so an upper end of 10^(k+1).
    nice(lo / 1.6, false)..nice(hi * 1.6, true)
}

/// The nearest of 1, 2 and 5 times a power of ten at or above `v` (`up`), or at or below it.
fn nice(v: f64, up: bool) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    let steps = [1.0, 2.0, 5.0, 10.0].map(|m| m * decade);
    if up {
        steps.into_iter().find(|&s| s >= v * (1.0 - 1e-9)).unwrap_or(10.0 * decade)
    } else {
        steps.into_iter().rev().find(|&s| s <= v * (1.0 + 1e-9)).unwrap_or(decade)
    }
}

fn windows(rows: &[RunSummary]) -> Vec<&RunSummary> {
    let mut w: Vec<&RunSummary> = rows
        .iter()
        .filter(|r| r.policy == "window" && r.window_ms.unwrap_or(0.0) > 0.0)
        .collect();
    w.sort_by(|a, b| a.window_ms.partial_cmp(&b.window_ms).unwrap_or(std::cmp::Ordering::Equal));
    w
}

fn references(rows: &[RunSummary]) -> Vec<&RunSummary> {
    rows.iter().filter(|r| r.policy != "window").collect()
}

/// A chart with logarithmic axes.
type LogLogChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<LogCoord<f64>, LogCoord<f64>>>;

/// A log-log chart with the report's caption, margins and labelled mesh.
fn log_log_chart<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    (x, x_desc): (Range<f64>, &str),
    (y, y_desc): (Range<f64>, &str),
) -> Result<LogLogChart<'a, DB>> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x.log_scale(), y.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .x_label_formatter(&log_label)
        .y_label_formatter(&log_label)
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// A log axis's label: 1, 2 and 5 times a power of ten, compactly ("20k", "1M", "0.05"); the
/// other grid lines unlabelled (a range within a decade or two otherwise labels every integer
/// multiple, and wide numbers overlap).
fn log_label(v: &f64) -> String {
    let decade = 10f64.powf(v.log10().floor());
    let mantissa = v / decade;
    if ![1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6) {
        return String::new();
    }
    let (scaled, suffix) = match *v {
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    // Rounded to the label's own precision: 0.05 stays 0.05, 2e4 prints 20k, not 20.000000001k.
    let digits = (-scaled.log10().floor()).max(0.0) as usize;
    format!("{:.*}{suffix}", digits, scaled)
}

/// A time-series panel: linear time axis, logarithmic value axis.
pub(super) type TimePanel<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, LogCoord<f64>>>;

/// A time-series panel with its labelled mesh.
pub(super) fn time_panel<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    t_end: f64,
    y: Range<f64>,
    (x_desc, y_desc): (&str, &str),
) -> Result<TimePanel<'a, DB>> {
    let mut c = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_end, y.log_scale())
        .map_err(err)?;
    c.configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&log_label)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    Ok(c)
}

/// One line per policy (`series`: legend label, policy name, time series). The best window is
/// drawn wider, so it shows around a policy that tracks it.
pub(super) fn draw_policy_lines<'a, DB: DrawingBackend + 'a>(
    c: &mut TimePanel<'a, DB>,
    series: &[(String, String, TimeSeries)],
    points: impl Fn(&TimeSeries) -> Vec<(f64, f64)>,
) -> Result<()> {
    for (_, policy, s) in series {
        let w = if policy == "window" { 5 } else { 2 };
        c.draw_series(LineSeries::new(points(s), color(policy).stroke_width(w))).map_err(err)?;
    }
    Ok(())
}

/// A run's name in legends and tables.
pub(super) fn label(r: &RunSummary) -> String {
    match (r.policy.as_str(), r.window_ms, r.latency_budget_ms) {
        ("gated", Some(w), _) => format!("gated ({w} ms)"),
        ("adaptive", _, Some(b)) => format!("adaptive (B = {b} ms)"),
        ("window", Some(w), _) => format!("window {w} ms"),
        (p, _, _) => p.to_string(),
    }
}

/// Plot 1: DB queries per second against the window; references as horizontal lines.
fn queries_plot<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, rows: &[RunSummary]) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (root, legend) = with_legend_strip(root);
    let root = &root;
    let mut keys = Vec::new();
    let ws = windows(rows);
    let refs = references(rows);
    let x = log_range(ws.iter().filter_map(|r| r.window_ms));
    let y = log_range(rows.iter().map(|r| r.queries_per_s));
    let mut chart = log_log_chart(
        root,
        title,
        (x.clone(), "window (ms, log scale)"),
        (y, "database queries per second (log scale)"),
    )?;
    let c = color("window");
    chart
        .draw_series(LineSeries::new(ws.iter().map(|r| (r.window_ms.unwrap_or(0.0), r.queries_per_s)), c.stroke_width(3)))
        .map_err(err)?;
    keys.push(("fixed window".to_string(), c, Key::Line(3)));
    chart
        .draw_series(ws.iter().map(|r| Circle::new((r.window_ms.unwrap_or(0.0), r.queries_per_s), 4, c.filled())))
        .map_err(err)?;
    for r in refs {
        let c = color(&r.policy);
        chart
            .draw_series(LineSeries::new([(x.start, r.queries_per_s), (x.end, r.queries_per_s)], c.stroke_width(2)))
            .map_err(err)?;
        keys.push((label(r), c, Key::Line(2)));
    }
    side_legend(&legend, &keys, 15)
}

/// A figure read from a run.
type Metric = fn(&RunSummary) -> f64;

/// Plot 2: latency p50 and p99 against the window; references' p99 as horizontal lines.
fn latency_plot<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, rows: &[RunSummary]) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (root, legend) = with_legend_strip(root);
    let root = &root;
    let mut keys = Vec::new();
    let ws = windows(rows);
    let x = log_range(ws.iter().filter_map(|r| r.window_ms));
    let y = log_range(rows.iter().flat_map(|r| [r.latency_ms.p50, r.latency_ms.p99]));
    let mut chart = log_log_chart(
        root,
        title,
        (x.clone(), "window (ms, log scale)"),
        (y, "latency, arrival to answer (ms, log scale)"),
    )?;
    let series: [(&str, Metric, RGBColor); 2] = [
        ("fixed window p50", |r| r.latency_ms.p50, RGBColor(100, 160, 240)),
        ("fixed window p99", |r| r.latency_ms.p99, color("window")),
    ];
    for (name, f, c) in series {
        chart
            .draw_series(LineSeries::new(ws.iter().map(|r| (r.window_ms.unwrap_or(0.0), f(r))), c.stroke_width(3)))
            .map_err(err)?;
        keys.push((name.to_string(), c, Key::Line(3)));
        chart
            .draw_series(ws.iter().map(|r| Circle::new((r.window_ms.unwrap_or(0.0), f(r)), 4, c.filled())))
            .map_err(err)?;
    }
    for r in references(rows) {
        let c = color(&r.policy);
        let p99 = r.latency_ms.p99;
        chart
            .draw_series(LineSeries::new([(x.start, p99), (x.end, p99)], c.stroke_width(2)))
            .map_err(err)?;
        keys.push((format!("{} p99", label(r)), c, Key::Line(2)));
    }
    side_legend(&legend, &keys, 15)
}

/// Plot 4: queries against p99 latency, one point per policy and window.
fn frontier_plot<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, rows: &[RunSummary]) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (root, legend) = with_legend_strip(root);
    let root = &root;
    let mut keys = Vec::new();
    let x = log_range(rows.iter().map(|r| r.queries as f64));
    let y = log_range(rows.iter().map(|r| r.latency_ms.p99));
    let mut chart = log_log_chart(
        root,
        title,
        (x, "database queries in the run (log scale)"),
        (y, "p99 latency (ms, log scale)"),
    )?;
    let ws = windows(rows);
    let c = color("window");
    chart
        .draw_series(LineSeries::new(ws.iter().map(|r| (r.queries as f64, r.latency_ms.p99)), c.mix(0.5).stroke_width(1)))
        .map_err(err)?;
    chart
        .draw_series(ws.iter().map(|r| {
            let p = (r.queries as f64, r.latency_ms.p99);
            EmptyElement::at(p)
                + Circle::new((0, 0), 5, c.filled())
                + Text::new(format!("{}", r.window_ms.unwrap_or(0.0)), (6, -14), ("sans-serif", 13))
        }))
        .map_err(err)?;
    keys.push(("fixed window (label: ms)".to_string(), c, Key::Circle));
    for r in references(rows) {
        let c = color(&r.policy);
        chart
            .draw_series([TriangleMarker::new((r.queries as f64, r.latency_ms.p99), 9, c.filled())])
            .map_err(err)?;
        keys.push((label(r), c, Key::Triangle));
    }
    // Dominated points: another run of the sweep has >= 1 % fewer queries and a >= 2 % lower
    // p99 (frontier::beats). A black ring around the marker.
    let ring = BLACK.stroke_width(2);
    chart
        .draw_series(
            rows.iter()
                .filter(|r| r.policy != "window" || r.window_ms.unwrap_or(0.0) > 0.0)
                .filter(|r| super::frontier::dominated(rows, r))
                .map(|r| Circle::new((r.queries as f64, r.latency_ms.p99), 11, ring)),
        )
        .map_err(err)?;
    keys.push(("dominated: another run has".to_string(), BLACK, Key::Ring));
    keys.push(("  >= 1 % fewer queries".to_string(), WHITE, Key::Line(0)));
    keys.push(("  and >= 2 % lower p99".to_string(), WHITE, Key::Line(0)));
    side_legend(&legend, &keys, 15)
}

/// What the time-series figures share: a white canvas under `title`, a legend strip on the
/// right, three panels stacked, and the series' bucket width and end (seconds).
pub(super) struct TimeFrame<DB: DrawingBackend> {
    pub(super) panels: Vec<DrawingArea<DB, Shift>>,
    pub(super) legend: DrawingArea<DB, Shift>,
    pub(super) width: f64,
    pub(super) t_end: f64,
}

/// Draws the [`TimeFrame`] of `series`; `None` (nothing drawn but the canvas) without a series.
pub(super) fn time_frame<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[(String, String, TimeSeries)],
) -> Result<Option<TimeFrame<DB>>> {
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 24)).map_err(err)?;
    let (root, legend) = with_legend_strip(&root);
    let panels = root.split_evenly((3, 1));
    let Some((_, _, first)) = series.first() else { return Ok(None) };
    let width = first.bucket_s();
    let t_end = series.iter().map(|(_, _, s)| s.buckets.len()).max().unwrap_or(1) as f64 * width;
    Ok(Some(TimeFrame { panels, legend, width, t_end }))
}

/// Plot 3: offered load, queries per second and p99 latency over time, per policy.
fn timeseries_plot<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[(String, String, TimeSeries)],
) -> Result<()> {
    let Some(TimeFrame { panels, legend, width, t_end }) = time_frame(root, title, series)? else { return Ok(()) };
    let first = &series[0].2;
    let rate = |n: u64| n as f64 / width;

    // Offered load.
    let offered: Vec<(f64, f64)> =
        first.buckets.iter().enumerate().map(|(i, b)| ((i as f64 + 0.5) * width, rate(b.arrivals))).collect();
    let y_max = offered.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&panels[0])
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_end, 0.0..y_max)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("time (s)")
        .y_desc("offered (req/s)")
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    c.draw_series(LineSeries::new(offered, BLACK.stroke_width(2))).map_err(err)?;
    let mut keys = vec![("offered load".to_string(), BLACK, Key::Line(2))];
    keys.extend(series.iter().map(|(name, policy, _)| (name.clone(), color(policy), Key::Line(if policy == "window" { 5 } else { 2 }))));
    side_legend(&legend, &keys, 14)?;

    // Queries per second.
    let q_range = log_range(
        series.iter().flat_map(|(_, _, s)| s.buckets.iter().map(|b| rate(b.queries))).filter(|&q| q > 0.0),
    );
    let q_floor = q_range.start;
    let mut c = time_panel(&panels[1], t_end, q_range, ("time (s)", "queries/s (log)"))?;
    draw_policy_lines(&mut c, series, |s| {
        s.buckets.iter().enumerate().map(|(i, b)| ((i as f64 + 0.5) * width, rate(b.queries).max(q_floor))).collect()
    })?;

    // p99 latency of the requests arriving in each bucket.
    let p99 = |s: &TimeSeries| -> Vec<(f64, f64)> {
        s.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| b.latency.count() > 0)
            .map(|(i, b)| ((i as f64 + 0.5) * width, (b.latency.quantile(0.99) as f64 / 1e6).max(1e-3)))
            .collect()
    };
    let y = log_range(series.iter().flat_map(|(_, _, s)| p99(s).into_iter().map(|p| p.1)));
    let mut c = time_panel(&panels[2], t_end, y, ("arrival time (s)", "p99 latency (ms, log)"))?;
    draw_policy_lines(&mut c, series, p99)
}

/// Writes the sweep plots of one scenario into `dir`: `<name>-queries`, `<name>-latency`,
/// `<name>-frontier` (and `<name>-timeseries` when `series` is not empty), each `.png` and
/// `.svg`. `series` holds (legend label, policy name, time series).
///
/// # Errors
///
/// If a file cannot be written.
pub fn write(dir: &Path, name: &str, rows: &[RunSummary], series: &[(String, String, TimeSeries)]) -> Result<()> {
    register_font();
    let stem = |what: &str| dir.join(format!("{name}-{what}"));
    let t = format!("{name}: database queries per second vs window");
    write_both!(stem("queries"), SIZE, queries_plot(&t, rows))?;
    let t = format!("{name}: latency vs window");
    write_both!(stem("latency"), SIZE, latency_plot(&t, rows))?;
    let t = format!("{name}: queries vs p99 latency (the trade-off frontier)");
    write_both!(stem("frontier"), SIZE, frontier_plot(&t, rows))?;
    if !series.is_empty() {
        let t = format!("{name}: load, queries and p99 latency over time");
        write_both!(stem("timeseries"), (1200, 950), timeseries_plot(&t, series))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_label;

    #[test]
    fn log_labels_name_one_two_and_five_times_a_power_of_ten_only() {
        let labels: Vec<String> = [0.05, 0.1, 0.3, 1.0, 2.0, 7.0, 10.0, 5000.0, 6000.0, 20_000.0, 1e6, 2.5e6, 5e6]
            .iter()
            .map(log_label)
            .collect();
        assert_eq!(labels, ["0.05", "0.1", "", "1", "2", "", "10", "5k", "", "20k", "1M", "", "5M"]);
    }

    #[test]
    fn log_ranges_hold_the_data_and_a_power_of_ten() {
        for (data, expected) in [([15.0, 40.0], 5.0..100.0), ([40.0, 50.0], 20.0..100.0), ([0.3, 0.4], 0.1..1.0), ([2.0, 12.0], 1.0..20.0), ([120.0, 9000.0], 50.0..20_000.0)] {
            let r = super::log_range(data.into_iter());
            assert_eq!(r, expected, "{data:?}");
        }
    }
}
