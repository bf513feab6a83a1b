//! Which kernel this process runs on: `/proc/sys/kernel/random/boot_id`, a random UUID the
//! kernel draws at boot. Every process of that kernel reads the same one, in whatever network,
//! pid or mount namespace; another host or virtual machine has its own (hosts restored from one
//! virtual machine snapshot are the exception: they share the snapshot's).

/// The boot id's 16 bytes (read once per process); `None` where it cannot be read or parsed.
pub fn boot_id() -> Option<[u8; 16]> {
    static ID: std::sync::OnceLock<Option<[u8; 16]>> = std::sync::OnceLock::new();
    *ID.get_or_init(|| parse(&std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?))
}

/// A UUID's 32 hex digits (dashes and surrounding white space ignored).
fn parse(text: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = text.trim().bytes().filter(|&b| b != b'-').collect();
    if digits.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        id[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_ids_parse_and_garbage_does_not() {
        let id = parse("b4d9c888-9f80-44ee-adcb-ac4a5ffea8bd\n").unwrap();
        assert_eq!(id[0], 0xb4);
        assert_eq!(id[15], 0xbd);
        for bad in
            ["", "b4d9c888-9f80-44ee-adcb-ac4a5ffea8b", "b4d9c888-9f80-44ee-adcb-ac4a5ffea8bdd", "x4d9c888-9f80-44ee-adcb-ac4a5ffea8bd"]
        {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        // This kernel's: readable here, and the same at every call.
        assert!(boot_id().is_some());
        assert_eq!(boot_id(), boot_id());
    }
}
