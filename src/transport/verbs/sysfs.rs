//! What sysfs tells about an RDMA device's link, in plain Rust (tested in every build).

use std::path::Path;

/// For a Soft-RoCE (rxe) device over a veth-like link (no `device` in sysfs, and linked to another
/// interface: `iflink` is not its own `ifindex`; bridges and bonds are their own) whose receive
/// is not steered (every `rps_cpus` zero): advice, once per device opened. Such a link
/// hands each packet to the receive queue of the CPU that sent it, and Soft-RoCE sends one queue
/// pair's packets from more than one CPU, so they can overtake each other; the responder then
/// NAKs and the requester sends everything from the gap again (docs/transports.md, "Soft-RoCE
/// over veth"). `sys` is sysfs' root (the tests build their own).
pub fn reorder_advice(sys: &Path, dev: &str, port: u8, gid_index: u8) -> Option<String> {
    let ndev = std::fs::read_to_string(sys.join(format!("class/infiniband/{dev}/ports/{port}/gid_attrs/ndevs/{gid_index}"))).ok()?;
    let ndev = ndev.trim();
    let net = sys.join("class/net").join(ndev);
    if ndev.is_empty() || ndev.contains('/') || !net.is_dir() || net.join("device").exists() {
        return None;
    }
    let read = |f: &str| std::fs::read_to_string(net.join(f)).ok().map(|v| v.trim().to_string());
    if read("iflink")? == read("ifindex")? {
        return None;
    }
    let mut queues = 0;
    for q in std::fs::read_dir(net.join("queues")).ok()?.flatten() {
        if !q.file_name().to_string_lossy().starts_with("rx-") {
            continue;
        }
        let mask = std::fs::read_to_string(q.path().join("rps_cpus")).ok()?;
        if mask.trim().chars().any(|c| c.is_ascii_hexdigit() && c != '0') {
            return None;
        }
        queues += 1;
    }
    (queues > 0).then(|| {
        format!(
            "verbs: {dev} is a software device over {ndev}, a virtual link whose receive runs on the sending CPU: \
             its queue pairs' packets can arrive out of order and be sent again (its hw_counters/completer_retry_err grows); \
             steer the link's receive to one CPU on both ends, e.g. echo 1 > /sys/class/net/{ndev}/queues/rx-0/rps_cpus"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::reorder_advice;
    use std::fs;
    use std::path::{Path, PathBuf};

    /// A sysfs tree: rxeA's GID 1 on `ndev`, whose receive queues have these `rps_cpus` masks;
    /// with a `device` link when `physical`.
    fn tree(name: &str, ndev: &str, masks: &[&str], physical: bool) -> PathBuf {
        let root = std::env::temp_dir().join(format!("nrt-sysfs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let gid = root.join("class/infiniband/rxeA/ports/1/gid_attrs/ndevs");
        fs::create_dir_all(&gid).unwrap();
        fs::write(gid.join("1"), format!("{ndev}\n")).unwrap();
        let net = root.join("class/net").join(ndev);
        for (i, m) in masks.iter().enumerate() {
            let q = net.join(format!("queues/rx-{i}"));
            fs::create_dir_all(&q).unwrap();
            fs::write(q.join("rps_cpus"), format!("{m}\n")).unwrap();
        }
        fs::create_dir_all(net.join("queues/tx-0")).unwrap();
        fs::write(net.join("ifindex"), "7\n").unwrap();
        fs::write(net.join("iflink"), "8\n").unwrap(); // its peer's
        if physical {
            fs::create_dir_all(net.join("device")).unwrap();
        }
        root
    }

    fn advice(root: &Path) -> Option<String> {
        let a = reorder_advice(root, "rxeA", 1, 1);
        let _ = fs::remove_dir_all(root);
        a
    }

    #[test]
    fn a_virtual_link_without_steering_gets_the_advice() {
        let a = advice(&tree("veth", "vethA", &["0"], false)).expect("advice");
        assert!(a.contains("rxeA is a software device over vethA"), "{a}");
        assert!(a.contains("echo 1 > /sys/class/net/vethA/queues/rx-0/rps_cpus"), "{a}");
        // Wide masks of zeros (many CPUs) are no steering either.
        assert!(advice(&tree("wide", "vethB", &["00000000,00000000", "0"], false)).is_some());
    }

    #[test]
    fn steering_a_physical_link_or_an_unknown_one_gets_none() {
        assert_eq!(advice(&tree("steered", "vethA", &["0", "1"], false)), None);
        assert_eq!(advice(&tree("steered-wide", "vethA", &["00000000,00000100"], false)), None);
        assert_eq!(advice(&tree("physical", "eth0", &["0"], true)), None);
        // No ndevs entry for the GID, or a netdev sysfs does not list, or no receive queue.
        assert_eq!(reorder_advice(Path::new("/nonexistent-sysfs"), "rxeA", 1, 1), None);
        let root = tree("gone", "vethA", &["0"], false);
        fs::remove_dir_all(root.join("class/net/vethA")).unwrap();
        assert_eq!(advice(&root), None);
        assert_eq!(advice(&tree("noqueues", "vethA", &[], false)), None);
        // A bridge or a bond: linked to itself.
        let root = tree("bridge", "br0", &["0"], false);
        fs::write(root.join("class/net/br0/iflink"), "7\n").unwrap();
        assert_eq!(advice(&root), None);
    }
}
