//! SVG charts: curves per epoch and a confusion-matrix heatmap, drawn with plotters.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::ReportError;

/// Series colours, in order: train, validation, then others.
pub const PALETTE: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
];

/// One curve: a name for the legend and its (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points in x order.
    pub points: Vec<(f64, f64)>,
}

fn failed(e: impl std::fmt::Display) -> ReportError {
    ReportError::Chart(e.to_string())
}

/// A line chart of the series against epochs.
pub fn lines(title: &str, y_desc: &str, series: &[Series]) -> Result<String, ReportError> {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_min, mut y_max) = (1f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    // A flat curve (a constant learning rate) still gets a readable axis around it.
    let magnitude = y_max.abs().max(y_min.abs());
    let pad = match y_max - y_min > magnitude * 1e-3 {
        true => (y_max - y_min) * 0.05,
        false => (magnitude * 0.05).max(1e-9),
    };
    let small = y_max.abs().max(y_min.abs()) < 0.01;
    let y_label = move |v: &f64| match small {
        true => format!("{v:.2e}"),
        false => format!("{v:.3}"),
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (600, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(1f64..x_max.max(2.0), (y_min - pad)..(y_max + pad))
            .map_err(failed)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_desc)
            .y_label_formatter(&y_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(failed)?;
        for (i, s) in series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(failed)?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(failed)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .position(legend_corner(series, y_min, y_max))
            .draw()
            .map_err(failed)?;
        root.present().map_err(failed)?;
    }
    Ok(svg)
}

/// Where the legend covers least: below the curves' ends when they end high, else above.
fn legend_corner(series: &[Series], y_min: f64, y_max: f64) -> SeriesLabelPosition {
    let ends: Vec<f64> = series
        .iter()
        .filter_map(|s| s.points.last().map(|p| p.1))
        .collect();
    let mean = ends.iter().sum::<f64>() / ends.len().max(1) as f64;
    match mean > (y_min + y_max) / 2.0 {
        true => SeriesLabelPosition::LowerRight,
        false => SeriesLabelPosition::UpperRight,
    }
}

/// A heatmap of `matrix[actual][predicted]`, each row shaded by its share of the row.
pub fn confusion(matrix: &[Vec<u64>], labels: &[String]) -> Result<String, ReportError> {
    let n = matrix.len().max(1);
    let size = (120 + 36 * n as u32).clamp(320, 900);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size, size)).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let count = n as i32;
        let name = |i: i32| -> String {
            match (0..count).contains(&i) {
                true => labels
                    .get(i as usize)
                    .cloned()
                    .unwrap_or_else(|| i.to_string()),
                false => String::new(),
            }
        };
        // Rows are drawn bottom-up, so row 0 (the first class) is at the top.
        let label_x = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => name(*i),
            _ => String::new(),
        };
        let label_y = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => name(count - 1 - *i),
            _ => String::new(),
        };
        let mut chart = ChartBuilder::on(&root)
            .caption("confusion matrix (rows: actual)", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d((0..count).into_segmented(), (0..count).into_segmented())
            .map_err(failed)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(n)
            .y_labels(n)
            .x_label_formatter(&label_x)
            .y_label_formatter(&label_y)
            .x_desc("predicted")
            .y_desc("actual")
            .draw()
            .map_err(failed)?;
        for (i, row) in matrix.iter().enumerate() {
            let total = row.iter().sum::<u64>().max(1) as f64;
            let y = count - 1 - i as i32;
            for (j, &hits) in row.iter().enumerate() {
                let share = hits as f64 / total;
                let shade = RGBColor(
                    (255.0 - 224.0 * share) as u8,
                    (255.0 - 136.0 * share) as u8,
                    (255.0 - 75.0 * share) as u8,
                );
                let x = j as i32;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [
                            (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                        ],
                        shade.filled(),
                    )))
                    .map_err(failed)?;
                let ink = if share > 0.5 { WHITE } else { BLACK };
                chart
                    .draw_series(std::iter::once(Text::new(
                        hits.to_string(),
                        (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                        ("sans-serif", 12)
                            .into_font()
                            .color(&ink)
                            .pos(Pos::new(HPos::Center, VPos::Center)),
                    )))
                    .map_err(failed)?;
            }
        }
        root.present().map_err(failed)?;
    }
    Ok(svg)
}
