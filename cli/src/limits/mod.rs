//! How wide the CLI lets calls go, and what it remembers of a server's limits.
//!
//! - [`ceiling`]: the default ceiling on calls in flight — the library's
//!   [`DEFAULT_MAX_CONCURRENCY`], or fewer when the process may not open that many
//!   sockets (after raising its soft open-file limit to the hard one, as a server
//!   would).
//! - [`store`]: what the admission gate learned about an endpoint (base URL, model,
//!   the key's fingerprint), kept in the user's cache directory between runs, so that
//!   only first contact with a limited server pays a wave of 429s.

pub mod store;

use fanfare::provider::DEFAULT_MAX_CONCURRENCY;

/// File descriptors kept for everything but model calls: the spec files, a journal,
/// the listener and a server's own clients, standard streams.
pub const RESERVED_FILES: u64 = 256;

/// The default ceiling on calls in flight, and the open-file limit when that limit
/// is what set it.
pub fn ceiling() -> (usize, Option<u64>) {
    let Some(files) = raise_open_file_limit() else {
        return (DEFAULT_MAX_CONCURRENCY, None);
    };
    let room = files.saturating_sub(RESERVED_FILES).max(1);
    if room < DEFAULT_MAX_CONCURRENCY as u64 {
        (room as usize, Some(files))
    } else {
        (DEFAULT_MAX_CONCURRENCY, None)
    }
}

/// Raises this process's soft limit on open files to its hard limit (as servers
/// do: the soft limit is often 1,024, and each call in flight holds a socket);
/// returns the limit now in force (`None`: unknown).
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls read or write one `rlimit` through a valid pointer to a
    // local; raising the soft limit up to the hard one needs no privilege.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}
