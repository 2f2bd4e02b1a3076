//! The throughput comparison as a grouped bar chart (PNG and SVG): one panel per workload and
//! `max_batch_size`, a group of bars per window, a bar per contender at its median loads/s with
//! a min–max whisker.
//!
//! Text uses DejaVu Sans embedded from `sim/assets` (licence beside it), registered with
//! plotters' `ab_glyph` backend as the simulator does, so a fresh machine needs no system font.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::throughput::Cell;

static FONT: &[u8] = include_bytes!("../../../../sim/assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // A failure here means the embedded file is not a font: a build bug.
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("embedded DejaVuSans.ttf is not a valid font"));
    });
}

/// One panel: a group of bars per entry of `groups`, one bar per series in each.
pub(crate) struct Panel {
    pub(crate) title: String,
    pub(crate) groups: Vec<String>,
    /// (name, one cell per group; `None` where the contender does not run).
    pub(crate) series: Vec<(String, Vec<Option<Cell>>)>,
}

const SIZE: (u32, u32) = (1400, 900);

fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 6] = [
        RGBColor(20, 90, 200),
        RGBColor(230, 130, 0),
        RGBColor(30, 140, 60),
        RGBColor(200, 30, 30),
        RGBColor(150, 60, 180),
        RGBColor(110, 110, 110),
    ];
    PALETTE[i % PALETTE.len()]
}

/// Writes `dir/name.png` and `dir/name.svg`.
pub(crate) fn throughput(dir: &Path, name: &str, title: &str, panels: &[Panel]) -> Result<(), String> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let png = dir.join(format!("{name}.png"));
    let svg = dir.join(format!("{name}.svg"));
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw(&root, title, panels)?;
        root.present().map_err(|e| e.to_string())?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(&root, title, panels)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, panels: &[Panel]) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let cols = 2;
    let rows = panels.len().div_ceil(cols).max(1);
    let areas = root.split_evenly((rows, cols));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        draw_panel(area, panel)?;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let top = panel
        .series
        .iter()
        .flat_map(|(_, cells)| cells.iter().flatten().map(|c| c.max))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        / 1e6;
    let groups = panel.groups.len();
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..groups as f64, 0.0..top * 1.1)
        .map_err(err)?;
    let labels = panel.groups.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups * 2 + 1)
        .x_label_formatter(&move |x| {
            // Label each group at its centre only.
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 1e-6 { labels.get(i).cloned().unwrap_or_default() } else { String::new() }
        })
        .y_desc("M loads/s")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    let n = panel.series.len().max(1) as f64;
    let width = 0.8 / n;
    for (i, (name, cells)) in panel.series.iter().enumerate() {
        let c = color(i);
        let bars = cells.iter().enumerate().filter_map(|(g, cell)| {
            let cell = (*cell)?;
            let x0 = g as f64 + 0.1 + i as f64 * width;
            Some(Rectangle::new([(x0, 0.0), (x0 + width * 0.9, cell.median / 1e6)], c.filled()))
        });
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
        let whiskers = cells.iter().enumerate().filter_map(|(g, cell)| {
            let cell = (*cell)?;
            let x = g as f64 + 0.1 + i as f64 * width + width * 0.45;
            Some(PathElement::new(vec![(x, cell.min / 1e6), (x, cell.max / 1e6)], BLACK.stroke_width(1)))
        });
        chart.draw_series(whiskers).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    Ok(())
}
