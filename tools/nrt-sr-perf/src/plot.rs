//! PNG plots (plotters, bitmap backend, text through ab_glyph with a TTF found at run time):
//! bandwidth (GB/s) against message size on a log2 axis, and p50 half round trip (µs) against
//! size, log-log. One line per run; reference points as triangles.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::prelude::*;
use plotters::style::register_font;
use serde_json::Value;

use crate::params::human_size;

pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 900;
const FONT: &str = "sans-serif";

/// One run: points are (size in bytes, value).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub bw: Vec<(u64, f64)>,
    pub lat: Vec<(u64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RefPoint {
    pub label: String,
    pub size: u64,
    pub gbytes_per_s: Option<f64>,
    pub lat_us: Option<f64>,
}

fn finite_pos(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite() && *x > 0.0)
}

/// A run from its JSON (as written by --json); the label defaults to `fallback`.
pub fn series_from_json(v: &Value, fallback: &str) -> Result<Series, String> {
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| "no \"results\" array (is it a nrt-sr-perf --json file?)".to_string())?;
    let label = v.get("label").and_then(Value::as_str).unwrap_or(fallback).to_string();
    let mut s = Series { label, bw: Vec::new(), lat: Vec::new() };
    for (i, r) in results.iter().enumerate() {
        let size = r
            .get("size")
            .and_then(Value::as_u64)
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("results[{i}] has no positive integer \"size\""))?;
        if let Some(g) = r.get("gbytes_per_s").and_then(finite_pos) {
            s.bw.push((size, g));
        }
        if let Some(l) = r.get("lat_p50_us").and_then(finite_pos) {
            s.lat.push((size, l));
        }
    }
    s.bw.sort_by_key(|p| p.0);
    s.lat.sort_by_key(|p| p.0);
    Ok(s)
}

pub fn load_run(path: &Path) -> Result<Series, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    series_from_json(&v, &stem).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reference points: a JSON array of {"label","size","gbytes_per_s"} or {"label","size","lat_us"}.
pub fn refs_from_json(v: &Value) -> Result<Vec<RefPoint>, String> {
    let arr = v.as_array().ok_or_else(|| "expected a JSON array of reference points".to_string())?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, r) in arr.iter().enumerate() {
        let label = r
            .get("label")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("reference [{i}]: no \"label\" string"))?
            .to_string();
        let size = r
            .get("size")
            .and_then(Value::as_u64)
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("reference [{i}] ({label}): no positive integer \"size\""))?;
        let num = |k: &str| -> Result<Option<f64>, String> {
            match r.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => finite_pos(x)
                    .map(Some)
                    .ok_or_else(|| format!("reference [{i}] ({label}): \"{k}\" is not a positive number")),
            }
        };
        let (g, l) = (num("gbytes_per_s")?, num("lat_us")?);
        if g.is_none() && l.is_none() {
            return Err(format!("reference [{i}] ({label}): needs \"gbytes_per_s\" or \"lat_us\""));
        }
        out.push(RefPoint { label, size, gbytes_per_s: g, lat_us: l });
    }
    Ok(out)
}

pub fn load_refs(path: &Path) -> Result<Vec<RefPoint>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
    refs_from_json(&v).map_err(|e| format!("{}: {e}", path.display()))
}

// ------------------------------------------------------------------ fonts

fn find_ttf(dir: &Path, depth: u32, want: &dyn Fn(&str) -> bool) -> Option<PathBuf> {
    if depth == 0 {
        return None;
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in &entries {
        if p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(want) {
            return Some(p.clone());
        }
    }
    entries.iter().filter(|p| p.is_dir()).find_map(|p| find_ttf(p, depth - 1, want))
}

/// The TTF used for text: $NRT_SR_PERF_FONT, else DejaVuSans.ttf, else any .ttf under the
/// usual font directories.
pub fn find_font() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NRT_SR_PERF_FONT") {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("NRT_SR_PERF_FONT={} is not a file", p.display())) };
    }
    let fixed = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
    if fixed.is_file() {
        return Ok(fixed.to_path_buf());
    }
    let dirs = ["/usr/share/fonts", "/usr/local/share/fonts"];
    let wants: [&dyn Fn(&str) -> bool; 3] = [
        &|n| n == "DejaVuSans.ttf",
        &|n| {
            let l = n.to_ascii_lowercase();
            l.ends_with(".ttf")
                && l.contains("sans")
                && !l.contains("bold")
                && !l.contains("italic")
                && !l.contains("oblique")
        },
        &|n| n.to_ascii_lowercase().ends_with(".ttf"),
    ];
    for want in wants {
        for d in dirs {
            if let Some(p) = find_ttf(Path::new(d), 6, want) {
                return Ok(p);
            }
        }
    }
    Err("no TrueType font (.ttf) found under /usr/share/fonts or /usr/local/share/fonts: install Debian's \
         fonts-dejavu-core package (apt-get install fonts-dejavu-core), or point NRT_SR_PERF_FONT at a .ttf file"
        .to_string())
}

fn ensure_font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = find_font()?;
        let bytes = std::fs::read(&path).map_err(|e| format!("reading font {}: {e}", path.display()))?;
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a usable TrueType font", path.display()))
    })
    .clone()
}

// ------------------------------------------------------------------ drawing

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn lg2(size: u64) -> f64 {
    (size as f64).log2()
}

/// The x range (log2 of size) and the key points (whole powers of two) to label.
pub fn x_axis(sizes: &[u64]) -> (f64, f64, Vec<f64>) {
    let (lo, hi) = match (sizes.iter().min(), sizes.iter().max()) {
        (Some(&a), Some(&b)) => (lg2(a).floor() as i64, lg2(b).ceil() as i64),
        _ => (3, 28),
    };
    let (lo, hi) = if lo == hi { (lo - 1, hi + 1) } else { (lo, hi) };
    let span = (hi - lo + 1) as usize;
    let step = span.div_ceil(14).max(1) as i64;
    let keys = (lo..=hi).filter(|k| (k - lo) % step == 0).map(|k| k as f64).collect();
    (lo as f64 - 0.4, hi as f64 + 0.4, keys)
}

fn size_label(v: f64) -> String {
    let k = v.round();
    if (0.0..63.0).contains(&k) { human_size(1u64 << (k as u32)) } else { String::new() }
}

/// The x axis: log2 of the message size, labelled at whole powers of two.
#[derive(Clone)]
struct Log2Axis {
    lo: f64,
    hi: f64,
    keys: Vec<f64>,
}

impl Ranged for Log2Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let max = hint.max_num_points().max(1);
        let step = self.keys.len().div_ceil(max).max(1);
        self.keys.iter().step_by(step).copied().collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Log2Axis {
    fn format_ext(&self, v: &f64) -> String {
        size_label(*v)
    }
}

fn num_label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

type Err = String;

fn e2s<E: std::fmt::Display>(e: E) -> Err {
    e.to_string()
}

/// Reference labels in first-seen order, each with a colour index after the runs'.
fn ref_colors(series: &[Series], refs: &[RefPoint]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for r in refs {
        if !out.iter().any(|(l, _)| *l == r.label) {
            let idx = series.len() + out.len();
            out.push((r.label.clone(), idx));
        }
    }
    out
}

/// One panel of the figure: a line per run (`pick` chooses its points), reference points as
/// triangles (`ref_value`), a legend, on a log2 size axis and the y axis `y`.
struct Panel {
    caption: &'static str,
    y_desc: &'static str,
    /// Written instead of a legend when there is nothing to draw.
    empty: &'static str,
}

impl Panel {
    #[allow(clippy::too_many_arguments)]
    fn draw<Y>(
        &self,
        area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
        x: Log2Axis,
        y: Y,
        series: &[Series],
        pick: impl Fn(&Series) -> &[(u64, f64)],
        refs: &[RefPoint],
        ref_value: impl Fn(&RefPoint) -> Option<f64>,
        ref_color: &dyn Fn(&str) -> RGBColor,
    ) -> Result<(), Err>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .caption(self.caption, (FONT, 20))
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x, y)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("message size")
            .y_desc(self.y_desc)
            .x_label_formatter(&|v| size_label(*v))
            .y_label_formatter(&|v| num_label(*v))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(e2s)?;
        let mut any = false;
        for (i, s) in series.iter().enumerate() {
            let points = pick(s);
            if points.is_empty() {
                continue;
            }
            any = true;
            let c = color(i);
            let pts: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (lg2(x), y)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(e2s)?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(e2s)?;
        }
        let mut seen: Vec<&str> = Vec::new();
        for r in refs {
            let Some(v) = ref_value(r) else { continue };
            any = true;
            let c = ref_color(&r.label);
            let anno = chart
                .draw_series(std::iter::once(TriangleMarker::new((lg2(r.size), v), 8, c.filled())))
                .map_err(e2s)?;
            if !seen.contains(&r.label.as_str()) {
                seen.push(&r.label);
                anno.label(r.label.clone()).legend(move |(x, y)| TriangleMarker::new((x + 11, y), 7, c.filled()));
            }
        }
        if any {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.5))
                .label_font((FONT, 14))
                .draw()
                .map_err(e2s)?;
        } else {
            area.draw_text(self.empty, &TextStyle::from((FONT, 18).into_font()).color(&BLACK), (520, 200))
                .map_err(e2s)?;
        }
        Ok(())
    }
}

pub fn draw(out: &Path, title: &str, series: &[Series], refs: &[RefPoint]) -> Result<(), Err> {
    ensure_font()?;
    let mut sizes: Vec<u64> = series.iter().flat_map(|s| s.bw.iter().chain(s.lat.iter()).map(|p| p.0)).collect();
    sizes.extend(refs.iter().map(|r| r.size));
    let (x0, x1, keys) = x_axis(&sizes);
    let rc = ref_colors(series, refs);
    let ref_color = |label: &str| color(rc.iter().find(|(l, _)| l == label).map(|x| x.1).unwrap_or(0));

    let root = BitMapBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(e2s)?;
    let (head, body) = root.split_vertically(50);
    head.draw_text(title, &TextStyle::from((FONT, 24).into_font()).color(&BLACK), (30, 14)).map_err(e2s)?;
    let (top, bottom) = body.split_vertically((HEIGHT - 50) / 2);

    // Bandwidth.
    let bw_max = series
        .iter()
        .flat_map(|s| s.bw.iter().map(|p| p.1))
        .chain(refs.iter().filter_map(|r| r.gbytes_per_s))
        .fold(0.0f64, f64::max);
    let ymax = if bw_max > 0.0 { bw_max * 1.15 } else { 1.0 };
    let x = Log2Axis { lo: x0, hi: x1, keys };
    let bw = Panel { caption: "Bandwidth", y_desc: "GB/s (1e9 bytes/s)", empty: "no bandwidth data" };
    bw.draw(&top, x.clone(), 0.0..ymax, series, |s| &s.bw, refs, |r| r.gbytes_per_s, &ref_color)?;

    // Latency (log-log).
    let lat_vals: Vec<f64> =
        series.iter().flat_map(|s| s.lat.iter().map(|p| p.1)).chain(refs.iter().filter_map(|r| r.lat_us)).collect();
    let (lmin, lmax) = if lat_vals.is_empty() {
        (1.0, 100.0)
    } else {
        let lo = lat_vals.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = lat_vals.iter().copied().fold(0.0f64, f64::max);
        let (lo, hi) = (lo / 1.6, hi * 1.6);
        if hi / lo < 10.0 { (lo / 2.0, hi * 2.0) } else { (lo, hi) }
    };
    let lat = Panel { caption: "Latency: half round trip, p50", y_desc: "microseconds", empty: "no latency data" };
    lat.draw(&bottom, x, (lmin..lmax).log_scale(), series, |s| &s.lat, refs, |r| r.lat_us, &ref_color)?;
    root.present().map_err(|e| format!("writing {}: {e}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_runs_leniently() {
        let v: Value = serde_json::from_str(
            r#"{"label":"a","results":[{"size":4096,"gbytes_per_s":1.5,"lat_p50_us":null},
                {"size":8,"gbytes_per_s":null,"lat_p50_us":12.0}]}"#,
        )
        .unwrap();
        let s = series_from_json(&v, "x").unwrap();
        assert_eq!(s.label, "a");
        assert_eq!(s.bw, vec![(4096, 1.5)]);
        assert_eq!(s.lat, vec![(8, 12.0)]);
        let v: Value = serde_json::from_str(r#"{"results":[]}"#).unwrap();
        assert_eq!(series_from_json(&v, "file").unwrap().label, "file");
        assert!(series_from_json(&serde_json::json!({"x":1}), "f").is_err());
        assert!(series_from_json(&serde_json::json!({"results":[{"gbytes_per_s":1}]}), "f").is_err());
    }

    #[test]
    fn reads_refs() {
        let v: Value = serde_json::from_str(
            r#"[{"label":"iperf3","size":1048576,"gbytes_per_s":5.0},{"label":"ucx","size":8,"lat_us":3.5}]"#,
        )
        .unwrap();
        let r = refs_from_json(&v).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].gbytes_per_s, Some(5.0));
        assert_eq!(r[1].lat_us, Some(3.5));
        assert!(refs_from_json(&serde_json::json!([{"label":"x","size":8}])).is_err());
        assert!(refs_from_json(&serde_json::json!([{"size":8,"lat_us":1}])).is_err());
        assert!(refs_from_json(&serde_json::json!({"label":"x"})).is_err());
    }

    #[test]
    fn axis_keys() {
        let (lo, hi, keys) = x_axis(&[8, 256 << 20]);
        assert!(lo < 3.0 && hi > 28.0);
        assert_eq!(keys.first(), Some(&3.0));
        assert!(keys.len() <= 14);
        let (_, _, keys) = x_axis(&[4096]);
        assert_eq!(keys, vec![11.0, 12.0, 13.0]);
        assert_eq!(size_label(12.0), "4 KiB");
        assert_eq!(num_label(2.5), "2.5");
        assert_eq!(num_label(0.125), "0.125");
        assert_eq!(num_label(250.0), "250");
    }
}
