//! Open-file descriptors, the limit a field laptop hits first: the proxy raises its
//! soft `RLIMIT_NOFILE` to the hard limit at start, and sizes `--max-connections` to
//! what that limit leaves.
//!
//! Why: most desktop Linux sessions start processes with a soft limit of 1024 (the
//! hard one is often 4096 to 1,048,576). Each proxied connection holds two
//! descriptors (the client's and the upstream's socket); past the limit, `accept`
//! and the upstream `connect` fail with "Too many open files", and so may the
//! store's own files. Under a soft limit of 1024, 505 of 1,500 concurrent clients got
//! a CONNACK although `--max-connections` defaulted to 2048. libc (already in the
//! build through tokio and mio) has `getrlimit`/`setrlimit`; no crate is added.

/// Descriptors a proxied connection holds: the client's socket and the upstream's.
pub const PER_CONNECTION: u64 = 2;
/// Descriptors kept for everything else: stdio, the listeners, the runtime's epoll
/// and event fds, the store's chunk files and index, a few for the blocking pool.
pub const RESERVED: u64 = 64;

/// The soft and hard open-file limits before and after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    pub was: u64,
    pub soft: u64,
    pub hard: u64,
}

/// The current `(soft, hard)` open-file limits (`u64::MAX` for unlimited).
pub fn nofile() -> std::io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((as_u64(r.rlim_cur), as_u64(r.rlim_max)))
}

fn as_u64(v: libc::rlim_t) -> u64 {
    if v == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        #[allow(clippy::unnecessary_cast)]
        let v = v as u64;
        v
    }
}

/// Raises the soft open-file limit to the hard one. An unlimited hard limit (or
/// one the kernel refuses, `fs.nr_open`) is tried at 1,048,576 instead.
pub fn raise_nofile() -> std::io::Result<NoFile> {
    let (soft, hard) = nofile()?;
    if soft >= hard {
        return Ok(NoFile {
            was: soft,
            soft,
            hard,
        });
    }
    for target in [hard, hard.min(1 << 20)] {
        let r = libc::rlimit {
            rlim_cur: if target == u64::MAX {
                libc::RLIM_INFINITY
            } else {
                target as libc::rlim_t
            },
            rlim_max: if hard == u64::MAX {
                libc::RLIM_INFINITY
            } else {
                hard as libc::rlim_t
            },
        };
        // SAFETY: a valid rlimit; raising the soft limit up to the hard one needs no
        // privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } == 0 {
            return Ok(NoFile {
                was: soft,
                soft: target,
                hard,
            });
        }
    }
    Err(std::io::Error::last_os_error())
}

/// How many proxied connections a soft limit of `soft` descriptors leaves, with
/// `other` descriptors taken besides [`RESERVED`] (the live view's connection cap).
pub fn connections_left(soft: u64, other: u64) -> u64 {
    soft.saturating_sub(RESERVED + other) / PER_CONNECTION
}

/// `--max-connections` as the limit allows: `(connections, warning)`. When `wanted`
/// exceeds what the limit leaves, the cap is lowered to that (new connections then
/// wait to be accepted instead of failing with "Too many open files", which would
/// hit the store's files too), and the warning says so and what to do.
pub fn fit_connections(wanted: usize, limits: &NoFile, other: u64) -> (usize, Option<String>) {
    let left = connections_left(limits.soft, other);
    if wanted as u64 <= left {
        return (wanted, None);
    }
    let cap = left.max(1) as usize;
    let hard = match limits.hard {
        u64::MAX => "unlimited".to_string(),
        h => h.to_string(),
    };
    (
        cap,
        Some(format!(
            "--max-connections {wanted} needs about {} open files ({PER_CONNECTION} per \
             connection, {} for the store, the runtime and the live view), but the \
             open-file limit is {} (hard limit {hard}): at most {cap} connections are \
             served at once, more wait to be accepted; raise the limit (`ulimit -n`, \
             LimitNOFILE= in a systemd unit) or lower --max-connections",
            wanted as u64 * PER_CONNECTION + RESERVED + other,
            RESERVED + other,
            limits.soft
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_past_the_open_file_limit_is_lowered_and_named() {
        let tight = NoFile {
            was: 1024,
            soft: 1024,
            hard: 1024,
        };
        // 1024 - 64 reserved - 64 for the live view = 896, two per connection.
        assert_eq!(connections_left(1024, 64), 448);
        let (cap, warning) = fit_connections(2048, &tight, 64);
        assert_eq!(cap, 448);
        let w = warning.unwrap();
        assert!(
            w.contains("--max-connections 2048") && w.contains("at most 448"),
            "{w}"
        );
        assert!(
            w.contains("open-file limit is 1024 (hard limit 1024)"),
            "{w}"
        );
        // Within the limit: unchanged, nothing said.
        let roomy = NoFile {
            was: 1024,
            soft: 1 << 20,
            hard: 1 << 20,
        };
        assert_eq!(fit_connections(2048, &roomy, 64), (2048, None));
        // A limit too small for even the reserve still serves one.
        assert_eq!(
            fit_connections(
                10,
                &NoFile {
                    was: 8,
                    soft: 8,
                    hard: 8
                },
                0
            )
            .0,
            1
        );
    }

    #[test]
    fn raising_keeps_the_hard_limit_and_never_lowers_the_soft_one() {
        let (soft, hard) = nofile().unwrap();
        let n = raise_nofile().unwrap();
        assert_eq!((n.was, n.hard), (soft, hard));
        assert!(n.soft >= soft && n.soft <= hard);
        assert_eq!(nofile().unwrap(), (n.soft, hard));
    }
}
