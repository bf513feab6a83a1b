//! How many logical cores a program sees (`nrt_get_*_nc_count`), from the vendor's variables.
//!
//! Without Neuron devices nothing is counted: the numbers come from the environment, read at
//! each call, with the vendor's syntax.
//!
//! - `NEURON_RT_VISIBLE_CORES`: the cores this process may use, a comma-separated list of core
//!   numbers and inclusive ranges (`0-3`, `1,3,8-11`). Visible = the distinct cores listed; total
//!   = the highest listed + 1.
//! - else `NEURON_RT_NUM_CORES`: a count n (cores 0..n-1): visible = total = n.
//! - else one core (lnc 0): visible = total = 1.
//!
//! `NEURON_LOGICAL_NC_CONFIG` (1, the default, or 2) is the number of physical cores per logical
//! core: the `nc` counts are the `vnc` counts times it. Cores are numbered 0 to `MAX_LNC`, the
//! lncs this library serves. Anything else is `NRT_INVALID`, naming the variable.

use crate::status::{Error, Result};

/// The highest core number (the lnc range of `nrt_async_sendrecv_init`).
pub const MAX_LNC: u32 = 1023;

/// Logical cores: (visible, total).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cores {
    pub visible: u32,
    pub total: u32,
    /// Physical cores per logical core.
    pub per_logical: u32,
}

/// Parses a `NEURON_RT_VISIBLE_CORES` list: (distinct cores, highest).
pub fn parse_list(s: &str) -> std::result::Result<(u32, u32), String> {
    let mut seen = vec![false; MAX_LNC as usize + 1];
    let num = |t: &str| -> std::result::Result<u32, String> {
        let t = t.trim();
        let n: u32 = t.parse().map_err(|_| format!("'{t}' is not a core number"))?;
        if n > MAX_LNC { Err(format!("core {n} is beyond {MAX_LNC}")) } else { Ok(n) }
    };
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if a > b {
            return Err(format!("range '{}' runs backwards", part.trim()));
        }
        for c in a..=b {
            seen[c as usize] = true;
        }
    }
    let visible = seen.iter().filter(|&&v| v).count() as u32;
    let highest = seen.iter().rposition(|&v| v).expect("a list names at least one core") as u32;
    Ok((visible, highest))
}

/// The counts from these variables' values.
pub fn from_vars(visible_cores: Option<&str>, num_cores: Option<&str>, logical: Option<&str>) -> Result<Cores> {
    let per_logical = match logical.map(str::trim) {
        None | Some("") | Some("1") => 1,
        Some("2") => 2,
        Some(v) => return Err(Error::invalid(format!("NEURON_LOGICAL_NC_CONFIG={v:?}: 1 or 2 expected"))),
    };
    if let Some(v) = visible_cores.filter(|v| !v.trim().is_empty()) {
        let (visible, highest) = parse_list(v).map_err(|e| Error::invalid(format!("NEURON_RT_VISIBLE_CORES={v:?}: {e}")))?;
        return Ok(Cores { visible, total: highest + 1, per_logical });
    }
    if let Some(v) = num_cores.filter(|v| !v.trim().is_empty()) {
        let n: u32 = v
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LNC + 1).contains(n))
            .ok_or_else(|| Error::invalid(format!("NEURON_RT_NUM_CORES={v:?}: a count from 1 to {} expected", MAX_LNC + 1)))?;
        return Ok(Cores { visible: n, total: n, per_logical });
    }
    Ok(Cores { visible: 1, total: 1, per_logical })
}

/// The counts from the process environment now.
pub fn current() -> Result<Cores> {
    let var = |k: &str| std::env::var(k).ok();
    from_vars(var("NEURON_RT_VISIBLE_CORES").as_deref(), var("NEURON_RT_NUM_CORES").as_deref(), var("NEURON_LOGICAL_NC_CONFIG").as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::NRT_STATUS;

    #[test]
    fn lists_ranges_and_counts() {
        assert_eq!(parse_list("0"), Ok((1, 0)));
        assert_eq!(parse_list("0-3"), Ok((4, 3)));
        assert_eq!(parse_list("1,3,8-11"), Ok((6, 11)));
        assert_eq!(parse_list(" 2 , 2-3 "), Ok((2, 3)));
        assert_eq!(parse_list("0-1023"), Ok((1024, 1023)));
        for bad in ["", "a", "1-", "-1", "3-1", "1024", "0,,1", "1.5"] {
            assert!(parse_list(bad).is_err(), "{bad:?} accepted");
        }
        let c = from_vars(Some("4-7"), Some("2"), None).unwrap();
        assert_eq!(c, Cores { visible: 4, total: 8, per_logical: 1 });
        assert_eq!(from_vars(None, Some("16"), Some("2")).unwrap(), Cores { visible: 16, total: 16, per_logical: 2 });
        assert_eq!(from_vars(None, None, None).unwrap(), Cores { visible: 1, total: 1, per_logical: 1 });
        assert_eq!(from_vars(Some(" "), None, None).unwrap(), Cores { visible: 1, total: 1, per_logical: 1 });
        for (v, n, l) in [(Some("x"), None, None), (None, Some("0"), None), (None, Some("1025"), None), (None, None, Some("3"))] {
            assert_eq!(from_vars(v, n, l).unwrap_err().status, NRT_STATUS::NRT_INVALID);
        }
    }
}
