//! What a server process spent: CPU time and peak resident memory, from /proc.

/// User + system CPU seconds of `pid` so far.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Resets the peak RSS the kernel keeps for `pid` (VmHWM), so the next reading is the peak
/// of what follows.
pub(crate) fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Peak RSS of `pid` in KiB since the last reset.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Gives the next measurement the same memory to start from: writes dirty pages back, empties
/// the page cache where allowed (root), then writes and deletes (unsynced, so the disk is not
/// touched) a scratch file a quarter larger than `bytes`. Without the first step, what earlier
/// pushes left cached makes later writes reclaim pages first. Without the second, a virtual
/// machine whose freed memory goes back to its host (free page reporting, as here) makes the
/// next writer fault every page in again at the host: measured here, writing 1 GiB cost
/// 2.75 s of system CPU ten seconds after a cache drop and 0.35 s right after a 1 GiB file
/// was deleted. Returns whether the cache was dropped.
pub(crate) fn settle_memory(bytes: u64) -> bool {
    let synced = std::process::Command::new("sync")
        .status()
        .is_ok_and(|status| status.success());
    let dropped = synced && std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok();
    let scratch = std::env::temp_dir().join(format!("berth-bench-warm-{}", std::process::id()));
    if let Ok(mut file) = std::fs::File::create(&scratch) {
        use std::io::Write;
        let block = vec![1u8; 4 << 20];
        let mut written = 0;
        while written < bytes + bytes / 4 && file.write_all(&block).is_ok() {
            written += block.len() as u64;
        }
    }
    let _ = std::fs::remove_file(&scratch);
    dropped
}
