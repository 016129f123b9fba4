//! Running the iptables tools of this host (or of the namespace we run in): every family (iptables,
//! ip6tables) and backend (legacy, nft) by its own command name.

use std::io::{BufReader, Write};
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    /// As iptables prints it: `legacy`, `nf_tables`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nf_tables",
        }
    }

    pub fn from_name(name: &str) -> Option<Backend> {
        match name {
            "legacy" => Some(Backend::Legacy),
            "nf_tables" | "nft" => Some(Backend::Nft),
            _ => None,
        }
    }
}

/// One iptables tool set: `iptables`, `ip6tables-legacy`, `iptables-nft`, ...
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tool {
    pub ipv6: bool,
    /// `None`: the distribution's default (`iptables`, whichever backend it points at).
    pub backend: Option<Backend>,
}

impl Tool {
    /// `iptables`, `ip6tables-legacy`, `iptables-nft`, ...
    pub fn binary(self) -> String {
        let family = if self.ipv6 { "ip6tables" } else { "iptables" };
        match self.backend {
            None => family.to_string(),
            Some(Backend::Legacy) => format!("{family}-legacy"),
            Some(Backend::Nft) => format!("{family}-nft"),
        }
    }

    pub fn save(self) -> String {
        format!("{}-save", self.binary())
    }

    /// The restore command a cleanup script is fed to, with `--noflush`.
    pub fn restore(self) -> String {
        format!("{}-restore --noflush", self.binary())
    }
}

/// Runs `command ARGS` (a `*-save`) and hands its output to `read` as a stream, so a million-line
/// rule set is never held in memory.
pub fn with_save_output<T>(
    command: &str,
    args: &[&str],
    read: impl FnOnce(BufReader<ChildStdout>) -> std::result::Result<T, String>,
) -> Result<T> {
    let mut child = Command::new(command)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| not_runnable(command, e))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let parsed = read(BufReader::with_capacity(1 << 20, stdout));
    let output = child.wait_with_output().map_err(|e| not_runnable(command, e))?;
    if !output.status.success() {
        return Err(failed(command, &output.stderr));
    }
    parsed.map_err(|e| Error::could_not_run(format!("reading the output of {command}"), e))
}

/// Whether `command` exists on PATH.
pub fn exists(command: &str) -> bool {
    Command::new(command).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// `nft --version` (`nftables v1.0.6 (Lester Gooch #5)`) -> `1.0.6`; `None` when it cannot say.
pub fn nft_version() -> Option<String> {
    let output = Command::new("nft").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    Some(version.to_string())
}

/// `iptables --version` (or any binary of the family) -> ("1.8.9", "nf_tables").
pub fn version(binary: &str) -> Result<(String, String)> {
    let output = Command::new(binary).arg("--version").output().map_err(|e| not_runnable(binary, e))?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text).ok_or_else(|| {
        Error::could_not_run(
            format!("reading {binary} --version"),
            format!("unexpected answer {:?}", text.trim()),
        )
    })
}

fn parse_version(text: &str) -> Option<(String, String)> {
    // "iptables v1.8.9 (nf_tables)", "ip6tables v1.8.7 (legacy)" or, before 1.8, "iptables v1.6.1".
    let after = text.trim().split_once(" v")?.1;
    let version: String = after.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let backend = match after.split_once('(').and_then(|(_, b)| b.split_once(')')) {
        Some((backend, _)) => backend.to_string(),
        None => "legacy".to_string(),
    };
    (!version.is_empty()).then_some((version, backend))
}

/// Runs `binary ARGS`; Ok(true) on exit 0, Ok(false) on exit 1 (what `-C` says for "no such
/// rule"), an error otherwise. Returns how long it took.
pub fn run(binary: &str, args: &[&str]) -> Result<(bool, Duration)> {
    let start = Instant::now();
    let output = Command::new(binary).args(args).output().map_err(|e| not_runnable(binary, e))?;
    let took = start.elapsed();
    match output.status.code() {
        Some(0) => Ok((true, took)),
        Some(1) if args.contains(&"-C") => Ok((false, took)),
        _ => Err(failed(&format!("{binary} {}", args.join(" ")), &output.stderr)),
    }
}

/// Feeds `script` to a restore command line (`iptables-legacy-restore --noflush`).
pub fn restore(command_line: &str, script: &[u8]) -> Result<()> {
    let mut words = command_line.split_whitespace();
    let program = words.next().unwrap_or("iptables-restore");
    let mut child = Command::new(program)
        .args(words)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| not_runnable(program, e))?;
    let written = child.stdin.take().expect("stdin is piped").write_all(script);
    let output = child.wait_with_output().map_err(|e| not_runnable(program, e))?;
    if !output.status.success() {
        return Err(failed(command_line, &output.stderr));
    }
    written.map_err(|e| Error::could_not_run(format!("writing to {command_line}"), e.to_string()))
}

fn not_runnable(command: &str, err: std::io::Error) -> Error {
    if err.kind() == std::io::ErrorKind::NotFound {
        Error::could_not_run(
            format!("running {command}"),
            "not installed: apt-get install iptables, or analyse a saved dump with --file",
        )
    } else {
        Error::could_not_run(format!("running {command}"), err.to_string())
    }
}

fn failed(command: &str, stderr: &[u8]) -> Error {
    let text = String::from_utf8_lossy(stderr);
    let first = text.lines().next().unwrap_or("").trim().to_string();
    if text.contains("Permission denied")
        || text.contains("Operation not permitted")
        || text.contains("must be root")
    {
        Error::could_not_run(
            format!("running {command}"),
            "permission denied: reading and changing iptables needs root (sudo) or CAP_NET_ADMIN",
        )
    } else {
        Error::could_not_run(format!("running {command}"), format!("it failed: {first}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("iptables v1.8.9 (nf_tables)\n"),
            Some(("1.8.9".into(), "nf_tables".into()))
        );
        assert_eq!(parse_version("ip6tables v1.8.7 (legacy)"), Some(("1.8.7".into(), "legacy".into())));
        assert_eq!(parse_version("iptables v1.6.1"), Some(("1.6.1".into(), "legacy".into())));
        assert_eq!(parse_version("bash: iptables: not found"), None);
    }

    #[test]
    fn command_names() {
        let t = |ipv6, backend| Tool { ipv6, backend };
        assert_eq!(t(false, None).save(), "iptables-save");
        assert_eq!(t(true, Some(Backend::Legacy)).restore(), "ip6tables-legacy-restore --noflush");
        assert_eq!(t(false, Some(Backend::Nft)).binary(), "iptables-nft");
    }
}
