//! Server figures from `/proc`: CPU time (`/proc/PID/stat` utime + stime,
//! all threads) and resident memory (`/proc/PID/status` VmRSS).

/// CPU seconds used so far by the given processes together.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub seconds: f64,
}

impl CpuSample {
    /// Samples every pid; `None` when none was given or one cannot be read.
    pub fn take(pids: &[u32]) -> Option<Self> {
        if pids.is_empty() {
            return None;
        }
        let mut seconds = 0.0;
        for &pid in pids {
            seconds += cpu_seconds(pid)?;
        }
        Some(CpuSample { seconds })
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&text).map(|ticks| ticks as f64 / clock_ticks())
}

/// utime + stime in ticks from the text of `/proc/PID/stat`. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_stat_cpu(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory of the given processes together, in bytes.
pub fn rss_bytes(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0;
    for &pid in pids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        total += parse_vmrss(&text)?;
    }
    Some(total)
}

/// VmRSS in bytes from the text of `/proc/PID/status`.
pub fn parse_vmrss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_stat_cpu(stat), Some(300));
        assert_eq!(parse_stat_cpu("garbage"), None);
        assert_eq!(parse_vmrss("Name:\tx\nVmRSS:\t   2048 kB\n"), Some(2048 * 1024));
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(rss_bytes(&[me]).unwrap() > 0);
    }
}
