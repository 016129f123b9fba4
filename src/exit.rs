//! The exit codes, written down once. README and `--help` (cli::EXIT_CODES) list the same table.

use std::process::ExitCode;

use netprobe_probes::{Error, Health};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: the probe found nothing wrong.
    Healthy = 0,
    /// 1: the probe ran and its verdict is bad.
    Fault = 1,
    /// 2: invalid usage or input.
    BadInput = 2,
    /// 3: the probe could not run.
    CouldNotRun = 3,
}

impl Exit {
    /// The one place a report's verdict becomes an exit code.
    pub fn from_health(health: Health) -> Exit {
        match health {
            Health::Ok => Exit::Healthy,
            Health::Fault => Exit::Fault,
            Health::CouldNotRun => Exit::CouldNotRun,
        }
    }

    pub fn from_error(err: &Error) -> Exit {
        if err.is_bad_input() {
            Exit::BadInput
        } else {
            Exit::CouldNotRun
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}
