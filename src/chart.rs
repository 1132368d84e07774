//! The chart of `llmfs bench --svg`: compression ratio per file per codec, and each
//! codec's throughput, drawn with `plotters` into one SVG.
//!
//! It lives in the library, not in the command-line layer, so that its test runs with
//! the library's unit tests. plotters is built with its SVG backend only: no font
//! library is linked, the SVG's `<text>` elements name a generic font family and the
//! viewer lays them out, and plotters places labels from an estimate of their width.

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// What the chart shows, measured by `llmfs bench`.
#[derive(Debug, Clone)]
pub struct Figures {
    /// The first line above the chart.
    pub title: String,
    /// A second, smaller line: the model, threads, segment size.
    pub subtitle: String,
    /// One group of bars per file, in this order (the last one may be the total).
    pub files: Vec<String>,
    /// In this order: one bar per codec in every file's group, and one pair of
    /// throughput bars (compress, decompress) per codec; a codec's colour follows its
    /// position. Must not be empty.
    pub codecs: Vec<CodecFigures>,
}

/// One codec (or one setting of the LLM codec, e.g. a primer).
#[derive(Debug, Clone)]
pub struct CodecFigures {
    /// The codec's label in the legend and under its throughput bars.
    pub name: String,
    /// Original bytes over compressed bytes, one per entry of [`Figures::files`].
    pub ratios: Vec<f64>,
    /// Original bytes per second over all the files, to compress (no bar unless finite
    /// and positive).
    pub encode_bps: f64,
    /// Original bytes per second over all the files, to decompress (no bar unless
    /// finite and positive).
    pub decode_bps: f64,
}

/// Okabe-Ito's colour-blind-safe palette, grey first for the first baseline.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x99, 0x99, 0x99),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xF0, 0xE4, 0x42),
];
const ENCODE: RGBColor = RGBColor(0x00, 0x72, 0xB2);
const DECODE: RGBColor = RGBColor(0xE6, 0x9F, 0x00);
const FONT: &str = "sans-serif";
// Font sizes are plotters' (it writes `font-size` as size / 1.24).
/// Pixels per bar of the ratio panel, and the legend's width.
const BAR_PX: u32 = 30;
const LEGEND_PX: u32 = 230;
const RATIO_PX: u32 = 430;
const SPEED_PX: u32 = 380;
const TITLE_PX: u32 = 64;
/// x-axis units per group of bars (an integer axis: plotters formats custom key points
/// only on integer axes).
const UNIT: i32 = 1000;

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// plotters' own estimate of a label's width at `size` px (the one it lays out with).
fn text_px(text: &str, size: f64) -> u32 {
    (size / 1.24 / 1.24 * 0.7 * text.chars().count() as f64).ceil() as u32
}

/// `1234.5` as `1.23 kB/s`, `1000` as `1 kB/s`.
pub fn format_rate(bps: f64) -> String {
    let (v, unit) = if bps >= 1e9 {
        (bps / 1e9, "GB/s")
    } else if bps >= 1e6 {
        (bps / 1e6, "MB/s")
    } else if bps >= 1e3 {
        (bps / 1e3, "kB/s")
    } else {
        (bps, "B/s")
    };
    if v >= 100.0 || v == v.round() {
        format!("{v:.0} {unit}")
    } else if v >= 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.2} {unit}")
    }
}

/// The chart as an SVG document.
pub fn render(f: &Figures) -> anyhow::Result<String> {
    anyhow::ensure!(
        !f.files.is_empty() && !f.codecs.is_empty(),
        "nothing to chart"
    );
    for c in &f.codecs {
        anyhow::ensure!(
            c.ratios.len() == f.files.len(),
            "{}: {} ratios for {} files",
            c.name,
            c.ratios.len(),
            f.files.len()
        );
    }
    let groups = f.files.len() as u32;
    let bars = f.codecs.len() as u32;
    // Each group of bars is at least as wide as its file name.
    let longest = f.files.iter().map(|n| text_px(n, 17.0)).max().unwrap_or(0);
    let group_px = (BAR_PX * (bars + 1)).max(longest + 24);
    let speed_px = f
        .codecs
        .iter()
        .map(|c| text_px(&c.name, 17.0) + 24)
        .max()
        .unwrap_or(0)
        .max(140);
    let plot_px = (group_px * groups).max(speed_px * bars);
    let width = plot_px + LEGEND_PX + 100;
    let height = TITLE_PX + RATIO_PX + SPEED_PX;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        draw(&root, f, width - LEGEND_PX).map_err(|e| anyhow!("drawing the chart: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("drawing the chart: {e}"))?;
    }
    Ok(svg)
}

/// Renders [`render`]'s SVG into `path`.
pub fn write(path: &Path, f: &Figures) -> anyhow::Result<()> {
    let svg = render(f)?;
    std::fs::write(path, svg).map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    f: &Figures,
    chart_px: u32,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(TITLE_PX);
    head.draw(&Text::new(
        f.title.clone(),
        (16, 10),
        (FONT, 26).into_font().style(FontStyle::Bold),
    ))?;
    head.draw(&Text::new(f.subtitle.clone(), (16, 38), (FONT, 18)))?;
    let (ratio_area, speed_area) = body.split_vertically(RATIO_PX);
    let (ratio_plot, ratio_legend) = ratio_area.split_horizontally(chart_px);
    let (speed_plot, speed_legend) = speed_area.split_horizontally(chart_px);
    draw_ratios(&ratio_plot, f)?;
    let entries: Vec<_> = f
        .codecs
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), color(i)))
        .collect();
    legend(&ratio_legend, "codec", &entries)?;
    draw_speeds(&speed_plot, f)?;
    legend(
        &speed_legend,
        "throughput",
        &[("compress", ENCODE), ("decompress", DECODE)],
    )?;
    Ok(())
}

/// A boxed legend at the top left of `area`: a swatch and a name per entry.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    entries: &[(&str, RGBColor)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (x0, y0, line) = (12, 30, 22);
    let w = LEGEND_PX as i32 - 24;
    let h = 34 + line * entries.len() as i32;
    area.draw(&Rectangle::new(
        [(x0, y0), (x0 + w, y0 + h)],
        ShapeStyle::from(&BLACK.mix(0.4)).stroke_width(1),
    ))?;
    area.draw(&Text::new(
        title.to_string(),
        (x0 + 10, y0 + 8),
        (FONT, 17).into_font().style(FontStyle::Bold),
    ))?;
    for (i, (name, c)) in entries.iter().enumerate() {
        let y = y0 + 30 + line * i as i32;
        area.draw(&Rectangle::new(
            [(x0 + 10, y), (x0 + 26, y + 14)],
            c.filled(),
        ))?;
        area.draw(&Text::new(name.to_string(), (x0 + 34, y), (FONT, 17)))?;
    }
    Ok(())
}

fn draw_ratios<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    f: &Figures,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let n = f.files.len();
    let max = f
        .codecs
        .iter()
        .flat_map(|c| c.ratios.iter().copied())
        .filter(|r| r.is_finite())
        .fold(1.0f64, f64::max);
    let top = (max * 1.12).ceil();
    let centers: Vec<i32> = (0..n as i32).map(|i| i * UNIT + UNIT / 2).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Compression ratio (original bytes / compressed bytes; higher is better)",
            (FONT, 20),
        )
        .margin(12)
        .x_label_area_size(56)
        .y_label_area_size(64)
        .build_cartesian_2d((0..n as i32 * UNIT).with_key_points(centers), 0f64..top)?;
    let files = f.files.clone();
    let x_fmt = move |x: &i32| {
        let i = (x / UNIT) as usize;
        files.get(i).cloned().unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|y| {
            if *y == y.round() {
                format!("{y:.0}x")
            } else {
                format!("{y:.1}x")
            }
        })
        .x_desc("file")
        .y_desc("ratio")
        .x_label_style((FONT, 17))
        .y_label_style((FONT, 16))
        .axis_desc_style((FONT, 17))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    let k = f.codecs.len() as i32;
    // Bars of one file side by side, with a gap of one bar width between files.
    let width = UNIT / (k + 1);
    for (j, c) in f.codecs.iter().enumerate() {
        let style = color(j).filled();
        let x0 = move |i: usize| i as i32 * UNIT + width / 2 + width * j as i32;
        chart.draw_series(c.ratios.iter().enumerate().map(|(i, &r)| {
            Rectangle::new(
                [(x0(i), 0.0), (x0(i) + width * 92 / 100, r.max(0.0))],
                style,
            )
        }))?;
        chart.draw_series(c.ratios.iter().enumerate().map(|(i, &r)| {
            let x = x0(i) + width * 46 / 100;
            Text::new(
                format!("{r:.2}"),
                (x, r.max(0.0)),
                (FONT, 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))?;
    }
    Ok(())
}

fn draw_speeds<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    f: &Figures,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let n = f.codecs.len();
    let rates = || {
        f.codecs
            .iter()
            .flat_map(|c| [c.encode_bps, c.decode_bps])
            .filter(|r| r.is_finite() && *r > 0.0)
    };
    let lo = rates().fold(f64::INFINITY, f64::min);
    let hi = rates().fold(0.0f64, f64::max);
    // Whole decades around every figure, with room above the highest bar for its label
    // and below the lowest so that it shows.
    let (lo, hi) = if hi > 0.0 {
        (
            10f64.powf((lo / 3.0).log10().floor()),
            10f64.powf((hi * 3.0).log10().ceil()),
        )
    } else {
        (1.0, 10.0)
    };
    let centers: Vec<i32> = (0..n as i32).map(|i| i * UNIT + UNIT / 2).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Throughput over all files (original bytes per second; log scale)",
            (FONT, 20),
        )
        .margin(12)
        .x_label_area_size(56)
        .y_label_area_size(90)
        .build_cartesian_2d(
            (0..n as i32 * UNIT).with_key_points(centers),
            (lo..hi).log_scale(),
        )?;
    let names: Vec<String> = f.codecs.iter().map(|c| c.name.clone()).collect();
    let x_fmt = move |x: &i32| names.get((x / UNIT) as usize).cloned().unwrap_or_default();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|y| format_rate(*y))
        .x_desc("codec")
        .y_desc("bytes/s")
        .x_label_style((FONT, 17))
        .y_label_style((FONT, 16))
        .axis_desc_style((FONT, 17))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    for (side, colour) in [(0usize, ENCODE), (1, DECODE)] {
        let bars = f.codecs.iter().enumerate().filter_map(|(i, c)| {
            let r = if side == 0 {
                c.encode_bps
            } else {
                c.decode_bps
            };
            (r.is_finite() && r > 0.0).then_some((i, r))
        });
        let bars: Vec<_> = bars.collect();
        // Two bars per codec, each a third of its slot wide.
        let x0 = move |i: usize| i as i32 * UNIT + UNIT * (14 + 36 * side as i32) / 100;
        chart.draw_series(bars.iter().map(|&(i, r)| {
            Rectangle::new([(x0(i), lo), (x0(i) + UNIT * 34 / 100, r)], colour.filled())
        }))?;
        chart.draw_series(bars.iter().map(|&(i, r)| {
            Text::new(
                format_rate(r),
                (x0(i) + UNIT * 17 / 100, r),
                (FONT, 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        let codec = |name: &str, ratios: Vec<f64>, e: f64, d: f64| CodecFigures {
            name: name.into(),
            ratios,
            encode_bps: e,
            decode_bps: d,
        };
        Figures {
            title: "llmfs bench".into(),
            subtitle: "SmolLM2-135M-Instruct Q4_1, 2 threads, 4 KiB segments".into(),
            files: vec![
                "gemma-log.jsonl".into(),
                "notes & prose.md".into(),
                "all files".into(),
            ],
            codecs: vec![
                codec("gzip -9", vec![2.9, 1.9, 2.4], 3.1e7, 2.2e8),
                codec("xz -9", vec![2.91, 1.88, 2.34], 2.0e6, 4.0e7),
                codec("zstd -19", vec![2.97, 1.94, 2.44], 9.0e6, 6.0e8),
                codec(
                    "llmfs, primer builtin",
                    vec![11.01, 4.68, 8.98],
                    248.0,
                    247.0,
                ),
            ],
        }
    }

    /// The contents of the SVG's `<text>` elements, in order.
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim())
            })
            .collect()
    }

    #[test]
    fn the_chart_is_an_svg_naming_every_file_and_codec() {
        let svg = render(&figures()).unwrap();
        let texts = texts(&svg);
        let count = |s: &str| texts.iter().filter(|t| **t == s).count();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for name in ["gemma-log.jsonl", "all files", "notes &amp; prose.md"] {
            assert_eq!(count(name), 1, "{name} in {texts:?}");
        }
        for name in ["gzip -9", "xz -9", "zstd -19", "llmfs, primer builtin"] {
            // Once in the legend and once under its throughput bars.
            assert_eq!(count(name), 2, "{name} in {texts:?}");
        }
        // Titles, axis titles, and the figures themselves above their bars.
        for label in [
            "llmfs bench",
            "ratio",
            "file",
            "codec",
            "bytes/s",
            "compress",
            "decompress",
            "11.01",
            "4.68",
            "248 B/s",
            "600 MB/s",
            "1 kB/s",
        ] {
            assert!(count(label) >= 1, "no {label} in {texts:?}");
        }
        // One bar per file per codec, and two per codec for throughput: 12 + 8 filled
        // rectangles besides the background and the legends' swatches (4 + 2).
        let filled = svg.matches("<rect").count();
        assert!(filled >= 12 + 8 + 6, "{filled} rectangles");
        assert!(svg.len() < 100_000, "{} bytes", svg.len());
    }

    #[test]
    fn figures_that_do_not_match_are_refused() {
        let mut f = figures();
        f.codecs[1].ratios.pop();
        assert!(render(&f).is_err());
        f.codecs.clear();
        assert!(render(&f).is_err());
    }

    #[test]
    fn no_throughput_still_draws() {
        let mut f = figures();
        for c in &mut f.codecs {
            (c.encode_bps, c.decode_bps) = (0.0, f64::NAN);
        }
        let svg = render(&f).unwrap();
        assert_eq!(texts(&svg).iter().filter(|t| **t == "zstd -19").count(), 2);
    }

    #[test]
    fn rates_are_written_with_their_unit() {
        assert_eq!(format_rate(248.4), "248 B/s");
        assert_eq!(format_rate(1234.0), "1.23 kB/s");
        assert_eq!(format_rate(31.5e6), "31.5 MB/s");
        assert_eq!(format_rate(1e9), "1 GB/s");
    }
}
