//! Ctrl-C / SIGTERM / SIGHUP handling for the CLI: tear down every live lab, then exit.
//!
//! The signals are blocked in every thread and taken synchronously by one dedicated thread
//! with `sigwait`, so the cleanup runs as ordinary code (not in a signal handler). Child
//! processes get an empty signal mask from `std::process::Command`, so they are unaffected.

use std::sync::atomic::{AtomicBool, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);
static RECEIVED: AtomicBool = AtomicBool::new(false);

/// Whether a terminating signal has arrived (long loops may stop early on it).
pub fn interrupted() -> bool {
    RECEIVED.load(Ordering::SeqCst)
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Installs the handler. Must be called from the main thread before any other thread is
/// started (threads inherit the blocked mask). Calling it twice is harmless.
pub fn install() {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let set = signal_set();
    // SAFETY: blocking signals in the calling thread with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    std::thread::Builder::new()
        .name("netsim-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait on a valid set the thread has blocked (inherited mask).
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            RECEIVED.store(true, Ordering::SeqCst);
            eprintln!("netsim: signal {sig} received, removing the lab");
            crate::lab::teardown_live_labs();
            std::process::exit(128 + sig);
        })
        .expect("spawning the signal thread");
}
