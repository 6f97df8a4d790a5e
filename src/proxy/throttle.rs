//! The live judge's CPU cap (`proxy --judge-cpu`), on the judge's own thread
//! ([`super::judge`]).

use std::time::{Duration, Instant};

/// The judge's CPU cap (`proxy --judge-cpu`), a token bucket over the thread's own
/// CPU time: it earns `share` µs of CPU per µs of wall time, keeps at most
/// [`Throttle::BURST`] of it (a burst of a few thousand messages is judged at once),
/// and sleeps when it has spent more than it earned.
///
/// Why a cap on top of SCHED_IDLE: on the 2-core machine of `bench/proxy.sh`,
/// `mosquitto_pub -l` of 50,000 conforming reports of 1 KB at QoS 0 ran at 0.99 of
/// direct through a proxy whose judge was switched off, and at 0.86 with the judge
/// at SCHED_IDLE: per-thread CPU time (`/proc/PID/task/*/stat`) showed the judge
/// with 61 of edgetap's 113 ticks (JSON parsing alone took 37), and `perf` showed it
/// preempted by reschedule IPIs all the time. A thread of the idle class still costs
/// the others on shared (SMT, virtual) cores: even a bare spinning loop at
/// SCHED_IDLE slowed the direct run by 3 to 5 %. So when the proxy records into a
/// store, the live judge takes a bounded share of a core; what it cannot judge live
/// it skips (the console and the live view say so) and the final report judges the
/// capture again from the store, complete.
pub(crate) struct Throttle {
    share: f64,
    tokens_us: f64,
    wall: Instant,
    cpu_us: i64,
}

impl Throttle {
    /// CPU time the judge may bank while it has nothing to do.
    const BURST: Duration = Duration::from_millis(20);
    /// Longest single pause (the proxy stopping is noticed between pauses).
    const MAX_PAUSE: Duration = Duration::from_millis(50);

    pub(crate) fn new(share: f64) -> Throttle {
        Throttle {
            share: share.max(0.001),
            tokens_us: Self::BURST.as_micros() as f64,
            wall: Instant::now(),
            cpu_us: thread_cpu_us(),
        }
    }

    /// How long to pause now, having spent what was spent since the last call.
    fn due(&mut self) -> Duration {
        let (wall, cpu) = (Instant::now(), thread_cpu_us());
        let d = self.spent((wall - self.wall).as_micros() as i64, cpu - self.cpu_us);
        self.wall = wall;
        self.cpu_us = cpu;
        d
    }

    /// The bucket after `wall_us` of wall time in which `cpu_us` of CPU was spent:
    /// how long to pause for the CPU time spent to be back within the share.
    fn spent(&mut self, wall_us: i64, cpu_us: i64) -> Duration {
        let earned = wall_us.max(0) as f64 * self.share;
        self.tokens_us =
            (self.tokens_us + earned - cpu_us.max(0) as f64).min(Self::BURST.as_micros() as f64);
        if self.tokens_us >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_micros((-self.tokens_us / self.share) as u64)
    }

    /// Starts afresh from now, with nothing banked and nothing owed (the judge ran
    /// uncapped meanwhile: no traffic to take CPU time from).
    pub(super) fn forgive(&mut self) {
        self.tokens_us = 0.0;
        self.wall = Instant::now();
        self.cpu_us = thread_cpu_us();
    }

    /// Pauses while over the cap, unless the proxy is stopping (then everything
    /// left is judged at full speed: forwarding is over). `closing(d)` waits at most
    /// `d` and says whether the proxy is stopping.
    pub(super) fn pause(&mut self, closing: &dyn Fn(Duration) -> bool) {
        loop {
            let d = self.due();
            if d.is_zero() {
                return;
            }
            if closing(d.min(Self::MAX_PAUSE)) {
                return;
            }
        }
    }
}

/// The calling thread's CPU time, µs (0 where it cannot be read: no cap then).
fn thread_cpu_us() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    // (i64 on Linux x86_64 and aarch64; `as` keeps other targets building.)
    #[allow(clippy::unnecessary_cast)]
    let us = ts.tv_sec as i64 * 1_000_000 + ts.tv_nsec as i64 / 1_000;
    us
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_pauses_once_the_burst_is_spent_and_for_what_the_share_needs() {
        let mut t = Throttle::new(0.1);
        // 15 ms of CPU in 20 ms of wall time: within the 20 ms burst (plus 2 ms earned).
        assert_eq!(t.spent(20_000, 15_000), Duration::ZERO);
        // 10 ms more in 1 ms: 7 + 0.1 - 10 = -2.9 ms of tokens: 29 ms at 10 %.
        assert_eq!(t.spent(1_000, 10_000), Duration::from_micros(29_000));
        // Having paused those 29 ms (2.9 ms earned), nothing more is due.
        assert_eq!(t.spent(29_000, 0), Duration::ZERO);
        // A long quiet time banks no more than the burst.
        assert_eq!(t.spent(60_000_000, 0), Duration::ZERO);
        assert_eq!(t.spent(0, 20_000), Duration::ZERO);
        assert_eq!(t.spent(0, 1_000), Duration::from_micros(10_000));
    }
}
