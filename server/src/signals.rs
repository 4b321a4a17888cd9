//! SIGTERM and SIGINT as a request to stop cleanly.
//!
//! The handler only stores to an atomic (the one thing a signal handler may safely do);
//! the gateway's accept loop polls it. A node that is killed instead loses nothing either
//! (the journal has every acknowledged input); a clean stop also writes a snapshot.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
static RELOAD_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn request_reload(_signal: libc::c_int) {
    RELOAD_REQUESTED.store(true, Ordering::Release);
}

/// Routes SIGHUP to [`take_reload_request`] (the gateway then reloads its keys file).
pub fn install_reload() -> std::io::Result<()> {
    let handler = request_reload as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: as in `install`: the handler only stores to an atomic.
    if unsafe { libc::signal(libc::SIGHUP, handler) } == libc::SIG_ERR {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a SIGHUP arrived since the last call.
pub fn take_reload_request() -> bool {
    RELOAD_REQUESTED.swap(false, Ordering::AcqRel)
}

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::Release);
}

/// Routes SIGTERM and SIGINT to [`stop_requested`].
pub fn install() -> std::io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let handler = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler is an `extern "C"` function that only stores to an atomic,
        // which is async-signal-safe; `signal` has no other preconditions.
        if unsafe { libc::signal(signal, handler) } == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::Acquire)
}
