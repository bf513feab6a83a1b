//! Percentiles of latency samples.

/// The `p`-th percentile (0..=100) of `sorted` (ascending), interpolating linearly between the
/// two nearest ranks (numpy's default); `None` for no samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !p.is_finite() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let pos = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Sorts samples (total order; NaN last) and returns (p50, p99).
pub fn p50_p99(samples: &mut [f64]) -> (Option<f64>, Option<f64>) {
    samples.sort_by(|a, b| a.total_cmp(b));
    (percentile(samples, 50.0), percentile(samples, 99.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_single() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3.0], 50.0), Some(3.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
    }

    #[test]
    fn interpolates() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(4.0));
        assert_eq!(percentile(&v, 50.0), Some(2.5));
        let v: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(51.0));
        assert_eq!(percentile(&v, 99.0), Some(100.0));
        assert_eq!(percentile(&v, 150.0), Some(101.0));
    }

    #[test]
    fn sorts_first() {
        let mut v = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        let (p50, p99) = p50_p99(&mut v);
        assert_eq!(p50, Some(3.0));
        assert!((p99.unwrap() - 4.96).abs() < 1e-9);
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    }
}
