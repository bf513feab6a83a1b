//! Pure rules shared by both sides of a run: the size list, and the per-size iteration counts
//! and windows. Both processes derive identical plans from identical arguments, and the sender
//! checks that with a hash of the plan at start-up.

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Tensor memory one side may hold for the bandwidth phase: window × size × comms ≤ this.
pub const MEM_CAP_PER_SIDE: u64 = GIB;
/// Largest message size accepted (one message per communicator must fit the cap).
pub const MAX_SIZE: u64 = GIB;
/// Most ping-pong iterations per size.
pub const LAT_MAX_ITERS: u64 = 20_000;

/// Parses one size: a decimal integer with an optional suffix K, M, G (powers of 1024; also
/// KB/KiB, MB/MiB, GB/GiB, any case) or B.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size '{text}': expected a number with an optional K/M/G suffix"));
    }
    let n: u64 = num.parse().map_err(|_| format!("invalid size '{text}': number too large"))?;
    let mult = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        _ => return Err(format!("invalid size '{text}': unknown suffix '{}' (use K, M or G)", suffix.trim())),
    };
    n.checked_mul(mult).ok_or_else(|| format!("invalid size '{text}': too large"))
}

/// Parses a size list: comma-separated sizes and/or ranges `A:B` (every power of two from A to
/// B). The result is sorted and without duplicates; every size is 1 B ..= 1 GiB.
pub fn parse_sizes(text: &str) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("invalid size list '{text}': empty item"));
        }
        if let Some((a, b)) = item.split_once(':') {
            let (a, b) = (parse_size(a)?, parse_size(b)?);
            if a > b {
                return Err(format!("invalid size range '{item}': start is larger than end"));
            }
            let before = out.len();
            let mut p: u64 = 1;
            while p <= b {
                if p >= a {
                    out.push(p);
                }
                match p.checked_mul(2) {
                    Some(n) => p = n,
                    None => break,
                }
            }
            if out.len() == before {
                return Err(format!("invalid size range '{item}': no power of two in it"));
            }
        } else {
            out.push(parse_size(item)?);
        }
    }
    for &s in &out {
        if s == 0 {
            return Err("invalid size 0: sizes must be at least 1 byte".into());
        }
        if s > MAX_SIZE {
            return Err(format!("invalid size {}: at most {} per message", human_size(s), human_size(MAX_SIZE)));
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// "8 B", "4 KiB", "64 MiB", "1 GiB"; sizes that are not whole units get one decimal.
pub fn human_size(n: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        let u = 1u64 << shift;
        if n >= u {
            if n.is_multiple_of(u) {
                return format!("{} {unit}", n / u);
            }
            return format!("{:.1} {unit}", n as f64 / u as f64);
        }
    }
    format!("{n} B")
}

/// The user's knobs that decide the per-size counts.
#[derive(Debug, Clone)]
pub struct Rules {
    pub iters: u64,
    pub min_iters: u64,
    pub bytes_per_size: u64,
    pub warmup: u64,
    pub window: u64,
    pub comms: u64,
    /// The library's limit on requests in flight per communicator.
    pub max_pending: u64,
    /// Bytes of tensors per side the bandwidth phase cycles through (0: one per window slot).
    pub footprint: u64,
}

/// What one size runs: identical on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizePlan {
    pub size: u64,
    /// Measured messages per communicator (bandwidth phase).
    pub iters: u64,
    /// Measured ping-pongs (latency phase).
    pub lat_iters: u64,
    /// Warm-up messages per communicator (each verified by the receiver).
    pub warmup: u64,
    /// Requests in flight per communicator in the bandwidth phase.
    pub window: u64,
    /// Tensors per communicator the bandwidth phase cycles through (message m uses m % tensors).
    pub tensors: u64,
}

/// Measured messages per size per communicator: `iters`, reduced so that size × iters ≤
/// bytes_per_size, but never below min_iters by that reduction.
pub fn iters_for(r: &Rules, size: u64) -> u64 {
    let budget = r.bytes_per_size / size.max(1);
    r.iters.min(budget.max(r.min_iters)).max(1)
}

/// Ping-pong iterations: the same rule, at most LAT_MAX_ITERS.
pub fn lat_iters_for(r: &Rules, size: u64) -> u64 {
    iters_for(r, size).min(LAT_MAX_ITERS)
}

/// Warm-up messages per communicator: `warmup`, capped by the byte budget (at least one when
/// warm-up is on).
pub fn warmup_for(r: &Rules, size: u64) -> u64 {
    if r.warmup == 0 {
        return 0;
    }
    r.warmup.min((r.bytes_per_size / size.max(1)).max(1))
}

/// Requests in flight per communicator: `window`, lowered so that window × size × comms ≤
/// 1 GiB and window ≤ the library's pending limit, never above the message count, at least 1.
pub fn window_for(r: &Rules, size: u64) -> u64 {
    let by_mem = MEM_CAP_PER_SIDE / (size.max(1) * r.comms.max(1));
    r.window.min(by_mem).min(r.max_pending).min(iters_for(r, size)).max(1)
}

/// Tensors per communicator: one per window slot, or as many as `footprint` bytes per side
/// hold (within the same 1 GiB cap), so that runs with 1 and with 64 communicators can touch the
/// same amount of memory (a single communicator's window would otherwise stay in the CPU cache).
pub fn tensors_for(r: &Rules, size: u64) -> u64 {
    let w = window_for(r, size);
    if r.footprint == 0 {
        return w;
    }
    let per_comm = r.footprint.min(MEM_CAP_PER_SIDE) / (size.max(1) * r.comms.max(1));
    per_comm.max(w)
}

pub fn plan(r: &Rules, sizes: &[u64]) -> Vec<SizePlan> {
    sizes
        .iter()
        .map(|&size| SizePlan {
            size,
            iters: iters_for(r, size),
            lat_iters: lat_iters_for(r, size),
            // Every slot of the window is used once before the clock starts (its pages faulted
            // in, its memory registered or mapped by the peer), so the measurement sees none of that.
            warmup: if r.warmup == 0 { 0 } else { warmup_for(r, size).max(window_for(r, size)) },
            window: window_for(r, size),
            tensors: tensors_for(r, size),
        })
        .collect()
}

/// FNV-1a 64 over a canonical text of everything both sides must agree on.
pub fn config_hash(plans: &[SizePlan], comms: u64, mode: &str) -> u64 {
    let mut text = format!("nrt-sr-perf/1 comms={comms} mode={mode}");
    for p in plans {
        text.push_str(&format!(";{}:{}:{}:{}:{}:{}", p.size, p.iters, p.lat_iters, p.warmup, p.window, p.tensors));
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            iters: 1000,
            min_iters: 8,
            bytes_per_size: 2 * GIB,
            warmup: 10,
            window: 16,
            comms: 1,
            max_pending: 128,
            footprint: 0,
        }
    }

    #[test]
    fn sizes_single() {
        assert_eq!(parse_size("8").unwrap(), 8);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("64M").unwrap(), 64 * MIB);
        assert_eq!(parse_size("1G").unwrap(), GIB);
        assert_eq!(parse_size(" 3 MB ").unwrap(), 3 * MIB);
        assert_eq!(parse_size("10B").unwrap(), 10);
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn sizes_list_and_range() {
        assert_eq!(parse_sizes("8,4K,1M,64M").unwrap(), vec![8, 4096, MIB, 64 * MIB]);
        assert_eq!(parse_sizes("64M,8,8").unwrap(), vec![8, 64 * MIB]);
        assert_eq!(parse_sizes("8:64").unwrap(), vec![8, 16, 32, 64]);
        assert_eq!(parse_sizes("5:40").unwrap(), vec![8, 16, 32]);
        let d = parse_sizes("8:256M").unwrap();
        assert_eq!(d.len(), 26);
        assert_eq!(d[0], 8);
        assert_eq!(*d.last().unwrap(), 256 * MIB);
        assert_eq!(parse_sizes("1:2,1K").unwrap(), vec![1, 2, 1024]);
        assert!(parse_sizes("64:8").is_err());
        assert!(parse_sizes("5:7").is_err());
        assert!(parse_sizes("0").is_err());
        assert!(parse_sizes("8,,16").is_err());
        assert!(parse_sizes("2G").is_err());
        assert!(parse_sizes("1G").is_ok());
    }

    #[test]
    fn human() {
        assert_eq!(human_size(8), "8 B");
        assert_eq!(human_size(1000), "1000 B");
        assert_eq!(human_size(4096), "4 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(64 * MIB), "64 MiB");
        assert_eq!(human_size(GIB), "1 GiB");
    }

    #[test]
    fn iteration_rule() {
        let r = rules();
        assert_eq!(iters_for(&r, 8), 1000);
        assert_eq!(iters_for(&r, MIB), 1000);
        assert_eq!(iters_for(&r, 4 * MIB), 512);
        assert_eq!(iters_for(&r, 64 * MIB), 32);
        assert_eq!(iters_for(&r, 256 * MIB), 8);
        // Never below min_iters by the budget ...
        assert_eq!(iters_for(&r, GIB), 8);
        // ... but a smaller --iters is kept.
        let r5 = Rules { iters: 5, ..rules() };
        assert_eq!(iters_for(&r5, GIB), 5);
        assert_eq!(iters_for(&r5, 8), 5);
        // Latency: at most 20000.
        let big = Rules { iters: 100_000, ..rules() };
        assert_eq!(lat_iters_for(&big, 8), 20_000);
        assert_eq!(lat_iters_for(&big, 64 * MIB), 32);
        assert_eq!(lat_iters_for(&r, 8), 1000);
    }

    #[test]
    fn warmup_rule() {
        let r = rules();
        assert_eq!(warmup_for(&r, 8), 10);
        assert_eq!(warmup_for(&r, 256 * MIB), 8);
        assert_eq!(warmup_for(&r, GIB), 2);
        let tiny = Rules { bytes_per_size: MIB, ..rules() };
        assert_eq!(warmup_for(&tiny, 64 * MIB), 1);
        let off = Rules { warmup: 0, ..rules() };
        assert_eq!(warmup_for(&off, 8), 0);
    }

    #[test]
    fn window_rule() {
        let r = rules();
        assert_eq!(window_for(&r, 8), 16);
        assert_eq!(window_for(&r, 64 * MIB), 16);
        assert_eq!(window_for(&r, 128 * MIB), 8);
        assert_eq!(window_for(&r, 256 * MIB), 4);
        assert_eq!(window_for(&r, GIB), 1);
        let many = Rules { comms: 64, window: 128, ..rules() };
        assert_eq!(window_for(&many, 256 * KIB), 64);
        let pend = Rules { window: 500, ..rules() };
        assert_eq!(window_for(&pend, 8), 128);
        let few = Rules { iters: 3, ..rules() };
        assert_eq!(window_for(&few, 8), 3);
        // The cap holds for every size.
        for s in parse_sizes("1:1G").unwrap() {
            for c in [1, 3, 64] {
                let r = Rules { comms: c, ..rules() };
                let w = window_for(&r, s);
                assert!(w >= 1);
                assert!(w * s * c <= MEM_CAP_PER_SIDE || w == 1, "size {s} comms {c} window {w}");
            }
        }
    }

    #[test]
    fn footprint_sets_the_tensors_cycled_through() {
        let r = rules();
        assert_eq!(tensors_for(&r, MIB), 16);
        // 1 GiB of 1 MiB tensors: 1024 for one communicator, 16 each for 64 (never below the window).
        let one = Rules { footprint: GIB, ..rules() };
        assert_eq!(tensors_for(&one, MIB), 1024);
        assert_eq!(tensors_for(&Rules { comms: 64, ..one.clone() }, MIB), 16);
        assert_eq!(tensors_for(&Rules { comms: 128, ..one.clone() }, MIB), 8, "the window itself is capped then");
        // Capped at 1 GiB per side.
        assert_eq!(tensors_for(&Rules { footprint: 8 * GIB, ..rules() }, MIB), 1024);
        assert_ne!(
            config_hash(&plan(&one, &[MIB]), 1, "bw"),
            config_hash(&plan(&rules(), &[MIB]), 1, "bw"),
            "both sides must agree on the footprint"
        );
    }

    #[test]
    fn plan_and_hash() {
        let r = rules();
        let p = plan(&r, &parse_sizes("8,4K,1M,64M").unwrap());
        assert_eq!(p.len(), 4);
        assert_eq!(p[3], SizePlan { size: 64 * MIB, iters: 32, lat_iters: 32, warmup: 16, window: 16, tensors: 16 });
        let h = config_hash(&p, 1, "both");
        assert_eq!(h, config_hash(&plan(&r, &parse_sizes("64M,1M,4K,8").unwrap()), 1, "both"));
        assert_ne!(h, config_hash(&p, 2, "both"));
        assert_ne!(h, config_hash(&p, 1, "bw"));
        let r2 = Rules { iters: 999, ..rules() };
        assert_ne!(h, config_hash(&plan(&r2, &parse_sizes("8,4K,1M,64M").unwrap()), 1, "both"));
    }
}
