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

/// Writes dirty pages back and empties the page cache, where allowed (root), so every push
/// starts from the same memory: without it, the gigabytes earlier pushes left cached make
/// later writes reclaim pages first, and the round a target happens to run in decides its
/// figure. Returns whether the cache was dropped.
pub(crate) fn drop_page_cache() -> bool {
    let synced = std::process::Command::new("sync")
        .status()
        .is_ok_and(|status| status.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}
