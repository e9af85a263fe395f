//! SVG charts of a report (plotters): latency CDF per policy, load per region over time as a
//! heatmap, excess over the fluid bound per policy, the overload curve, and mesh bytes per node
//! against cluster size. Every series has its own colour *and* dash pattern and marker, so two
//! policies that land on one another stay distinguishable.

use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::report::Report;
use super::SimError;

const SIZE: (u32, u32) = (900, 560);

fn chart_err(path: &Path) -> impl Fn(String) -> SimError + '_ {
    move |message| SimError::Chart {
        path: path.to_path_buf(),
        message,
    }
}

fn colour(i: usize) -> RGBColor {
    // Okabe–Ito, a palette that stays distinct for colour-blind readers.
    const P: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(0, 158, 115),
        RGBColor(213, 94, 0),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(0, 0, 0),
        RGBColor(240, 228, 66),
    ];
    P[i % P.len()]
}

/// Series `i`'s dash: solid, long dashes, short dashes (length, gap in pixels; 0 = solid).
fn dash(i: usize) -> (u32, u32) {
    [(0, 0), (10, 5), (3, 4)][i % 3]
}

/// Draws series `i` as a line in its colour and dash, with its markers and legend entry.
fn series<'a, DB, CT>(
    c: &mut ChartContext<'a, DB, CT>,
    i: usize,
    name: &str,
    pts: Vec<(f64, f64)>,
    markers: bool,
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate<From = (f64, f64)>,
{
    let col = colour(i);
    let style = col.stroke_width(2);
    let (len, gap) = dash(i);
    let drawn = if len == 0 {
        c.draw_series(LineSeries::new(pts.clone(), style))
    } else {
        c.draw_series(DashedLineSeries::new(pts.clone(), len, gap, style))
    }
    .map_err(|x| x.to_string())?;
    drawn
        .label(name.to_string())
        .legend(move |(x, y)| -> DynElement<DB, (i32, i32)> {
            let line = vec![(x, y), (x + 24, y)];
            match len {
                0 => PathElement::new(line, style).into_dyn(),
                _ => DashedPathElement::new(line, len, gap, style).into_dyn(),
            }
        });
    if markers {
        let shape = i % 4;
        c.draw_series(pts.into_iter().map(move |p| -> DynElement<DB, (f64, f64)> {
            match shape {
                0 => Circle::new(p, 4, col.filled()).into_dyn(),
                1 => TriangleMarker::new(p, 5, col.filled()).into_dyn(),
                // An open triangle: a square needs a static backend in plotters.
                2 => Cross::new(p, 4, col.stroke_width(2)).into_dyn(),
                _ => TriangleMarker::new(p, 5, col.stroke_width(2)).into_dyn(),
            }
        }))
        .map_err(|x| x.to_string())?;
    }
    Ok(())
}

/// Latency CDF per policy, log-scaled latency axis.
pub fn latency_cdf(r: &Report, path: &Path) -> Result<(), SimError> {
    let e = chart_err(path);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let max = r
        .policies
        .iter()
        .flat_map(|p| p.latency_cdf.iter().map(|c| c.0))
        .fold(1.0f64, f64::max);
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!("{}: client latency CDF per policy", r.topology),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((5.0f64..max * 1.2).log_scale(), 0.0f64..1.0)
        .map_err(|x| e(x.to_string()))?;
    c.configure_mesh()
        .x_desc("latency, ms (log)")
        .y_desc("fraction of answered requests")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, p) in r.policies.iter().enumerate() {
        let pts: Vec<(f64, f64)> = p
            .latency_cdf
            .iter()
            .map(|&(ms, q)| (ms.max(0.1), q))
            .collect();
        series(&mut c, i, &p.policy, pts, false).map_err(&e)?;
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Writes `names` left of the plot, one per row, the first at the top (rows are unit bands of
/// the y axis, numbered from the bottom).
fn row_labels<'a, X: Ranged<ValueType = f64>, DB: DrawingBackend + 'a>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    c: &ChartContext<'a, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
    names: &[String],
) -> Result<(), String> {
    let n = names.len();
    let x0 = c.x_range().start;
    for (k, name) in names.iter().enumerate() {
        let (px, py) = c.backend_coord(&(x0, (n - 1 - k) as f64 + 0.5));
        let label = Text::new(
            name.clone(),
            (px - 8, py),
            TextStyle::from(("sans-serif", 14).into_font()).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Right,
                    plotters::style::text_anchor::VPos::Center,
                ),
            ),
        );
        root.draw(&label).map_err(|x| x.to_string())?;
    }
    Ok(())
}

/// Heat colour for `v` = load ÷ soft capacity: white at 0, yellow at 0.5, orange at 0.9, red at
/// 1.0 (the soft limit), dark red at 1.2 and above.
fn heat(v: f64) -> RGBColor {
    const STOPS: [(f64, (f64, f64, f64)); 5] = [
        (0.0, (255.0, 255.0, 255.0)),
        (0.5, (255.0, 237.0, 160.0)),
        (0.9, (253.0, 141.0, 60.0)),
        (1.0, (227.0, 26.0, 28.0)),
        (1.2, (128.0, 0.0, 38.0)),
    ];
    let v = v.clamp(0.0, 1.2);
    let k = STOPS
        .iter()
        .rposition(|(x, _)| *x <= v)
        .unwrap_or(0)
        .min(STOPS.len() - 2);
    let ((x0, a), (x1, b)) = (STOPS[k], STOPS[k + 1]);
    let t = ((v - x0) / (x1 - x0)).clamp(0.0, 1.0);
    let mix = |p: f64, q: f64| (p + (q - p) * t).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Load per region over time for the first policy (petrel `closest` by default), as a heatmap:
/// one row per region, one column per simulated second, colour = in flight ÷ soft capacity.
pub fn region_load(r: &Report, path: &Path) -> Result<(), SimError> {
    let e = chart_err(path);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let Some(p) = r.policies.first() else {
        return root.present().map_err(|x| e(x.to_string()));
    };
    let (main, bar) = root.split_horizontally(SIZE.0 - 110);
    let secs = p.region_util.len().max(1) as f64;
    let n = r.regions.len().max(1);
    let regions = &r.regions;
    let mut c = ChartBuilder::on(&main)
        .caption(
            format!("{}: load per region over time ({})", r.topology, p.policy),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0f64..secs, 0.0f64..n as f64)
        .map_err(|x| e(x.to_string()))?;
    c.configure_mesh()
        .disable_mesh()
        .x_desc("simulated seconds")
        .disable_y_axis()
        .draw()
        .map_err(|x| e(x.to_string()))?;
    row_labels(&root, &c, regions).map_err(&e)?;
    let cells = p.region_util.iter().enumerate().flat_map(|(t, row)| {
        (0..n).map(move |k| {
            let v = row.get(k).copied().unwrap_or(0.0);
            let y = (n - 1 - k) as f64;
            Rectangle::new([(t as f64, y), (t as f64 + 1.0, y + 1.0)], heat(v).filled())
        })
    });
    c.draw_series(cells).map_err(|x| e(x.to_string()))?;
    // The colour scale, 0 to 1.2 × soft.
    let mut k = ChartBuilder::on(&bar)
        .margin_top(44)
        .margin_bottom(52)
        .margin_right(14)
        .y_label_area_size(58)
        .build_cartesian_2d(0.0f64..1.0, 0.0f64..1.2)
        .map_err(|x| e(x.to_string()))?;
    k.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc("load ÷ soft capacity")
        .y_labels(7)
        .y_label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let steps = (0..120).map(|i| {
        let v = f64::from(i) / 100.0;
        Rectangle::new([(0.0, v), (1.0, v + 0.01)], heat(v + 0.005).filled())
    });
    k.draw_series(steps).map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Mean network time above the fluid bound per policy, as bars on a log axis with their values
/// written beside them: petrel's policies sit a millisecond or two above the bound, the RTT-blind
/// baselines a hundred, and both differences stay readable.
pub fn excess(r: &Report, path: &Path) -> Result<(), SimError> {
    let e = chart_err(path);
    let root = SVGBackend::new(path, (SIZE.0, 80 + 60 * r.policies.len().max(1) as u32))
        .into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let n = r.policies.len().max(1);
    let top = r.policies.iter().map(|p| p.excess_ms).fold(1.0, f64::max);
    let names: Vec<String> = r.policies.iter().map(|p| p.policy.clone()).collect();
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: mean network time above the fluid bound ({:.2} ms)",
                r.topology,
                r.policies.first().map_or(0.0, |p| p.fluid_bound_ms)
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(110)
        .build_cartesian_2d((0.1f64..top * 8.0).log_scale(), 0.0f64..n as f64)
        .map_err(|x| e(x.to_string()))?;
    c.configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("ms above the bound (log)")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    row_labels(&root, &c, &names).map_err(&e)?;
    for (i, p) in r.policies.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let v = p.excess_ms.max(0.1);
        c.draw_series(std::iter::once(Rectangle::new(
            [(0.1, y + 0.2), (v, y + 0.8)],
            colour(i).filled(),
        )))
        .map_err(|x| e(x.to_string()))?;
        c.draw_series(std::iter::once(Text::new(
            format!("{:.2} ms", p.excess_ms),
            (v * 1.15, y + 0.62),
            ("sans-serif", 14),
        )))
        .map_err(|x| e(x.to_string()))?;
    }
    root.present().map_err(|x| e(x.to_string()))
}

/// Gossip + ping bytes per node per second against cluster size (log-log).
pub fn mesh_bytes(r: &Report, path: &Path) -> Result<(), SimError> {
    let e = chart_err(path);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let max_n = r
        .mesh_scaling
        .iter()
        .map(|m| f64::from(m.nodes))
        .fold(10.0, f64::max);
    let max_b = r
        .mesh_scaling
        .iter()
        .map(|m| m.bytes_per_node_s)
        .fold(100.0, f64::max);
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!("{}: mesh bytes per node vs cluster size", r.topology),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (1.0f64..max_n * 2.0).log_scale(),
            (10.0f64..max_b * 2.0).log_scale(),
        )
        .map_err(|x| e(x.to_string()))?;
    c.configure_mesh()
        .x_desc("nodes (log)")
        .y_desc("bytes sent per node per second (log)")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let pts: Vec<(f64, f64)> = r
        .mesh_scaling
        .iter()
        .map(|m| (f64::from(m.nodes), m.bytes_per_node_s.max(10.0)))
        .collect();
    c.draw_series(LineSeries::new(pts.clone(), colour(0).stroke_width(2)))
        .map_err(|x| e(x.to_string()))?;
    c.draw_series(
        pts.into_iter()
            .map(|p| Circle::new(p, 4, colour(0).filled())),
    )
    .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Excess over the fluid bound per policy as the swept region's overload grows (log excess axis:
/// petrel's policies sit a few ms above the bound, the RTT-blind ones a hundred). Each policy has
/// its own colour and marker shape.
pub fn overload(r: &Report, path: &Path) -> Result<(), SimError> {
    let e = chart_err(path);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let xs = r.overload_curve.iter().map(|p| p.factor);
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let y1 = r
        .overload_curve
        .iter()
        .map(|p| p.excess_ms)
        .fold(1.0, f64::max);
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: network time above the fluid bound as one region's overload grows",
                r.topology
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0 - 0.1..x1 + 0.1, (0.05f64..y1 * 2.0).log_scale())
        .map_err(|x| e(x.to_string()))?;
    c.configure_mesh()
        .x_desc("the region's demand ÷ its own capacity")
        .y_desc("mean network time above the bound, ms (log)")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let mut names: Vec<&str> = Vec::new();
    for p in &r.overload_curve {
        if !names.contains(&p.policy.as_str()) {
            names.push(&p.policy);
        }
    }
    for (i, name) in names.iter().enumerate() {
        let pts: Vec<(f64, f64)> = r
            .overload_curve
            .iter()
            .filter(|p| p.policy == *name)
            .map(|p| (p.factor, p.excess_ms.max(0.05)))
            .collect();
        series(&mut c, i, name, pts, true).map_err(&e)?;
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}
