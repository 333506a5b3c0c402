//! Measuring a case from inside the process: CPU time, memory, open files, and the
//! median over repetitions.

use std::time::{Duration, Instant};

/// CPU time of the whole process (every thread, user and system), to the
/// nanosecond: `/proc/self/stat` counts in 10 ms ticks, coarse against the ~0.15 s
/// a 1,000-branch case takes.
pub(super) fn cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through a valid pointer to a
    // local and reads nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return 0.0;
    }
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// Open file descriptors of this process now.
pub(super) fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Waits (up to 5 s) until the process holds no more than a few files beyond
/// `baseline`: the last case's sockets have closed.
pub(super) async fn sockets_closed(baseline: usize) {
    let until = Instant::now() + Duration::from_secs(5);
    while open_files() > baseline + 64 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) fn rss_mb(field: &str) -> f64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0.0;
    };
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// One repetition of a case, timed from the request to the merged answer (setting
/// a client or a runtime up and shutting it down is outside): wall time, CPU time
/// of the process over it (the in-process mock's share included, for both clients
/// alike), branches ok and failed.
pub(super) type Measured = (Duration, f64, usize, usize);

/// Over a case's repetitions: the median wall time and, taken apart, the median CPU
/// time (the CPU of the median-wall run alone moved by ±30% between runs); the fewest
/// branches ok and the most failed, so one bad repetition shows.
pub(super) fn median(runs: Vec<Measured>) -> Measured {
    let mut walls: Vec<Duration> = runs.iter().map(|r| r.0).collect();
    walls.sort();
    let mut cpus: Vec<f64> = runs.iter().map(|r| r.1).collect();
    cpus.sort_by(f64::total_cmp);
    let ok = runs.iter().map(|r| r.2).min().unwrap_or(0);
    let failed = runs.iter().map(|r| r.3).max().unwrap_or(0);
    (walls[walls.len() / 2], cpus[cpus.len() / 2], ok, failed)
}
