//! SIGTERM and SIGINT as a request to stop cleanly; SIGHUP as a request to reload the
//! keys file.
//!
//! The handler only stores to an atomic (the one thing a signal handler may safely do);
//! the gateway's accept loop polls it. A node that is killed instead loses nothing either
//! (the journal has every acknowledged input); a clean stop also writes a snapshot.
//!
//! `tally serve` and `tally standby` deal with SIGHUP before anything else
//! ([`hold_reload`]): a SIGHUP while the node recovers (journal replay, the question of
//! its peers' epochs, a standby's checkpoint fetch) neither ends the process (its default
//! action) nor interrupts what the recovery is waiting on (a socket read with a timeout
//! fails with `EINTR` when a handler runs on its thread, whatever `SA_RESTART` says). It
//! stays pending until the node serves ([`release_reload`]), and the gateway's first turn
//! then reloads the keys file as it is by then. SIGTERM is routed only once the node
//! serves: during recovery it still ends the process at once, rather than after the
//! replay.

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

/// The first thing a node command does: routes SIGHUP (so that it never terminates the
/// node), and blocks it on this thread and on every thread started from it from now on,
/// the recovery's included: a SIGHUP sent meanwhile stays pending instead of
/// interrupting their reads. Call [`release_reload`] once the node serves. Threads
/// started earlier (jemalloc's, which block every signal) are not concerned.
pub fn hold_reload() -> std::io::Result<()> {
    install_reload()?;
    sighup_mask(libc::SIG_BLOCK)
}

/// Unblocks SIGHUP on this thread (the gateway's): a SIGHUP held since [`hold_reload`]
/// is delivered now, and the gateway's first turn reloads the keys. The threads started
/// during recovery keep it blocked; the kernel gives it to this one.
pub fn release_reload() -> std::io::Result<()> {
    sighup_mask(libc::SIG_UNBLOCK)
}

fn sighup_mask(how: libc::c_int) -> std::io::Result<()> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigemptyset` initialises the set `sigaddset` then adds to; `pthread_sigmask`
    // reads it and changes only this thread's mask (a null old set is allowed).
    let result = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGHUP);
        libc::pthread_sigmask(how, set.as_ptr(), std::ptr::null_mut())
    };
    if result != 0 {
        return Err(std::io::Error::from_raw_os_error(result));
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
