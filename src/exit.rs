//! The exit codes, written down once: the enum, and the table `--help` prints (`TABLE`). A test
//! checks the README's table says the same.

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

/// What each code means, as `--help` and the README show it.
pub const TABLE: &str = "\
Exit codes (the same for every subcommand):
  0  healthy: the probe found nothing wrong
  1  a fault was found: the verdict is bad
  2  invalid usage or input: a bad flag, an unreadable or malformed file
  3  the probe could not run: missing privilege, no such interface, agent unreachable";

impl Exit {
    pub const ALL: [Exit; 4] = [Exit::Healthy, Exit::Fault, Exit::BadInput, Exit::CouldNotRun];

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

    /// The exit of a netprobe that ran elsewhere (an agent's), by its code.
    pub fn from_code(code: i32) -> Exit {
        match code {
            0 => Exit::Healthy,
            1 => Exit::Fault,
            2 => Exit::BadInput,
            _ => Exit::CouldNotRun,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// The code's line of [`TABLE`], without the code: "healthy: the probe found nothing wrong".
    pub fn meaning(self) -> &'static str {
        let prefix = format!("  {}  ", self.code());
        TABLE
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .expect("every exit code has its line in TABLE")
    }

    /// The word a JSON error names its kind with.
    pub fn word(self) -> &'static str {
        match self {
            Exit::Healthy => "ok",
            Exit::Fault => "fault",
            Exit::BadInput => "bad-input",
            Exit::CouldNotRun => "could-not-run",
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_meaning_and_the_readme_says_the_same() {
        let readme = include_str!("../README.md");
        for exit in Exit::ALL {
            let row = format!("| {} | {} |", exit.code(), exit.meaning());
            assert!(readme.contains(&row), "README's exit table lacks {row:?}");
        }
        assert_eq!(TABLE.lines().count(), 1 + Exit::ALL.len(), "one line per code, no more");
    }
}
