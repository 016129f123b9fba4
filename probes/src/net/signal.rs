//! Ctrl-C for long-running probes: SIGINT and SIGTERM set a flag the probe's loop checks, so it
//! can stop cleanly and still hand back its summary. signal-hook installs the handlers (without
//! SA_RESTART, so a blocking poll returns at once).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

fn flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Installs the handlers (once; later calls change nothing).
pub fn catch_interrupts() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Failing to install leaves Ctrl-C's default: the process ends, as without a handler.
            let _ = signal_hook::flag::register(signal, flag().clone());
        }
    });
}

/// Whether SIGINT or SIGTERM arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    flag().load(Ordering::SeqCst)
}
