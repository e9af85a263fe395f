//! SVG charts of a report (plotters): latency CDF per policy, load per region over time, and mesh
//! bytes per node against cluster size.

use std::path::Path;

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
    const P: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    P[i % P.len()]
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
        .build_cartesian_2d((0.1f64..max * 1.2).log_scale(), 0.0f64..1.0)
        .map_err(|x| e(x.to_string()))?;
    c.configure_mesh()
        .x_desc("latency, ms (log)")
        .y_desc("fraction of answered requests")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, p) in r.policies.iter().enumerate() {
        let col = colour(i);
        let pts: Vec<(f64, f64)> = p
            .latency_cdf
            .iter()
            .map(|&(ms, q)| (ms.max(0.1), q))
            .collect();
        c.draw_series(LineSeries::new(pts, col.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(p.policy.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Utilisation per region over time, for the first policy (petrel `closest` by default).
pub fn region_load(r: &Report, path: &Path) -> Result<(), SimError> {
    let e = chart_err(path);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let Some(p) = r.policies.first() else {
        return root.present().map_err(|x| e(x.to_string()));
    };
    let top = p
        .region_util
        .iter()
        .flatten()
        .fold(1.0f64, |a, &b| a.max(b));
    let secs = p.region_util.len().max(1) as f64;
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!("{}: load per region over time ({})", r.topology, p.policy),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0f64..secs, 0.0f64..top * 1.1)
        .map_err(|x| e(x.to_string()))?;
    c.configure_mesh()
        .x_desc("simulated seconds")
        .y_desc("in flight / (instances × soft limit)")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (k, code) in r.regions.iter().enumerate() {
        let col = colour(k);
        let pts: Vec<(f64, f64)> = p
            .region_util
            .iter()
            .enumerate()
            .map(|(t, row)| (t as f64, row.get(k).copied().unwrap_or(0.0)))
            .collect();
        c.draw_series(LineSeries::new(pts, col.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(code.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|x| e(x.to_string()))?;
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
        let col = colour(i);
        let pts: Vec<(f64, f64)> = r
            .overload_curve
            .iter()
            .filter(|p| p.policy == *name)
            .map(|p| (p.factor, p.excess_ms.max(0.05)))
            .collect();
        c.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2)));
        let shape = i % 3;
        c.draw_series(
            pts.into_iter()
                .map(move |p| -> DynElement<SVGBackend, (f64, f64)> {
                    match shape {
                        0 => Circle::new(p, 5, col.filled()).into_dyn(),
                        1 => TriangleMarker::new(p, 6, col.filled()).into_dyn(),
                        _ => Cross::new(p, 5, col.stroke_width(2)).into_dyn(),
                    }
                }),
        )
        .map_err(|x| e(x.to_string()))?;
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}
