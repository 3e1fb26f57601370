//! What is read from /proc: a process's resident memory and CPU time, and how
//! busy a CPU was.

/// Resident set size in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU seconds of a process so far, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12th and 13th after ')'.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    Some(ticks as f64 / 100.0)
}

/// Busy and total time of one CPU so far, in ticks, from /proc/stat. Busy is
/// everything but idle and iowait, so it includes softirq time (where loopback
/// TCP does much of its work) and any other process that ran on that CPU.
pub fn cpu_ticks(cpu: usize) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let prefix = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&prefix))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// Share of time (in %) a CPU was busy between two [`cpu_ticks`] samples.
pub fn busy_pct(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1)?;
    let busy = after.0.checked_sub(before.0)?;
    (total > 0).then(|| 100.0 * busy as f64 / total as f64)
}

/// Wait (at most `limit`) until every CPU in `cpus` is nearly idle over a 250 ms window.
///
/// A scenario that opens and closes thousands of connections (idle, handshakes) leaves the
/// kernel busy for seconds afterwards (FIN/TIME_WAIT processing in softirq), which would be
/// charged to whichever server runs next. Returns the time waited.
pub fn wait_until_quiet(cpus: &[usize], limit: std::time::Duration) -> std::time::Duration {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        let before: Vec<_> = cpus.iter().map(|c| cpu_ticks(*c)).collect();
        std::thread::sleep(std::time::Duration::from_millis(250));
        let quiet = cpus
            .iter()
            .zip(before)
            .all(|(c, b)| match (b, cpu_ticks(*c)) {
                (Some(b), Some(a)) => busy_pct(b, a).is_none_or(|pct| pct < 10.0),
                _ => true,
            });
        if quiet {
            break;
        }
    }
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).is_some_and(|b| b > 0));
        assert!(cpu_seconds(pid).is_some());
        assert!(cpu_ticks(0).is_some_and(|(busy, total)| busy <= total));
    }
}
