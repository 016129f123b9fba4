//! One error type for every probe. Each variant says what failed, on what, and what to do; the
//! binary maps [`Error::is_bad_input`] to exit code 2 and everything else to exit code 3.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The fix for a missing CAP_NET_RAW, written once so every probe says the same thing.
pub const NET_RAW_FIX: &str =
    "run it with sudo, or grant the capability once: sudo setcap cap_net_raw,cap_net_admin+ep $(which netprobe)";

#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The user gave us something we cannot use (exit 2).
    #[error("{what}: {detail}")]
    InvalidInput { what: String, detail: String },

    /// A file that should be a packet capture is not one (exit 2).
    #[error("{path}: {detail}")]
    BadCapture { path: PathBuf, detail: String },

    /// The process lacks CAP_NET_RAW (exit 3).
    #[error("{op} needs CAP_NET_RAW: {NET_RAW_FIX}")]
    NoPrivilege { op: String },

    /// The named interface does not exist in this network namespace (exit 3).
    #[error("no interface named {name}: list them with `ip -br link` and pass one with -i/--interface")]
    NoSuchInterface { name: String },

    /// Anything else that stopped the probe from running (exit 3). `detail` carries the fix.
    #[error("{op}: {detail}")]
    CouldNotRun { op: String, detail: String },

    /// A peer at its limits for now (an agent's caps): the same request may pass a moment later
    /// (exit 3 if it never does).
    #[error("{op}: {detail}")]
    Busy { op: String, detail: String },

    /// A call that did not get through (the connection failed or broke before the answer): the
    /// network lost a packet of it, or the peer is gone. Worth one more try (exit 3 if it fails
    /// again).
    #[error("{op}: {detail}")]
    Unreachable { op: String, detail: String },
}

impl Error {
    /// True when the fault is in what the user gave us (exit 2), false when the probe could not run
    /// (exit 3).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::InvalidInput { .. } | Error::BadCapture { .. })
    }

    pub fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::InvalidInput { what: what.into(), detail: detail.into() }
    }

    pub fn could_not_run(op: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::CouldNotRun { op: op.into(), detail: detail.into() }
    }

    /// True for [`Error::Busy`]: worth trying again after a pause.
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Busy { .. })
    }

    /// True for [`Error::Busy`] and [`Error::Unreachable`]: the same work may pass when done
    /// again, so a pair it failed is measured again before it is called untested.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Busy { .. } | Error::Unreachable { .. })
    }
}
