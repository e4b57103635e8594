//! What a server process spent: CPU time and peak resident memory, from /proc.

use std::time::Duration;

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
/// was deleted. It first waits (up to 10 s) for the machine to be quiet, so that a server
/// measured before, still busy after its run, does not slow the next. Returns whether the
/// cache was dropped.
pub(crate) fn settle_memory(bytes: u64) -> bool {
    wait_for_quiet(0.9, Duration::from_secs(10));
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

/// Idle and total CPU ticks of the whole machine so far (/proc/stat).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    // idle + iowait, of user, nice, system, idle, iowait, irq, softirq, steal.
    Some((ticks.get(3)? + ticks.get(4)?, ticks.iter().sum()))
}

/// Waits until the machine's CPUs were at least `idle` idle over a quarter of a second, or
/// until `limit` has passed.
fn wait_for_quiet(idle: f64, limit: Duration) {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        let Some((idle_before, total_before)) = cpu_ticks() else {
            return;
        };
        std::thread::sleep(Duration::from_millis(250));
        let Some((idle_after, total_after)) = cpu_ticks() else {
            return;
        };
        let total = total_after.saturating_sub(total_before).max(1);
        if idle_after.saturating_sub(idle_before) as f64 / total as f64 >= idle {
            return;
        }
    }
}
