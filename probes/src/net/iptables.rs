//! Running the iptables tools of this host (or of the namespace we run in).

use std::io::BufReader;
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Runs a `*-save` command (iptables-save, ip6tables-save, iptables-legacy-save, ...) and hands its
/// output to `read` as a stream, so a million-line rule set is never held in memory.
pub fn with_save_output<T>(
    command: &str,
    read: impl FnOnce(BufReader<ChildStdout>) -> std::result::Result<T, String>,
) -> Result<T> {
    let mut child = Command::new(command)
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

/// Whether `command` exists on PATH (the other backend's tools are optional).
pub fn exists(command: &str) -> bool {
    Command::new(command).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// `iptables --version` -> ("1.8.9", "nf_tables").
pub fn version() -> Result<(String, String)> {
    let output =
        Command::new("iptables").arg("--version").output().map_err(|e| not_runnable("iptables", e))?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text).ok_or_else(|| {
        Error::could_not_run("reading iptables --version", format!("unexpected answer {:?}", text.trim()))
    })
}

fn parse_version(text: &str) -> Option<(String, String)> {
    // "iptables v1.8.9 (nf_tables)" or, before 1.8, "iptables v1.6.1".
    let after = text.trim().strip_prefix("iptables v")?;
    let version: String = after.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let backend = match after.split_once('(').and_then(|(_, b)| b.split_once(')')) {
        Some((backend, _)) => backend.to_string(),
        None => "legacy".to_string(),
    };
    (!version.is_empty()).then_some((version, backend))
}

/// Runs `iptables ARGS`; Ok(true) on exit 0, Ok(false) on exit 1 (what `-C` says for "no such
/// rule"), an error otherwise. Returns how long it took.
pub fn run(args: &[&str]) -> Result<(bool, Duration)> {
    let start = Instant::now();
    let output = Command::new("iptables").args(args).output().map_err(|e| not_runnable("iptables", e))?;
    let took = start.elapsed();
    match output.status.code() {
        Some(0) => Ok((true, took)),
        Some(1) if args.contains(&"-C") => Ok((false, took)),
        _ => Err(failed(&format!("iptables {}", args.join(" ")), &output.stderr)),
    }
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
        assert_eq!(parse_version("iptables v1.8.7 (legacy)"), Some(("1.8.7".into(), "legacy".into())));
        assert_eq!(parse_version("iptables v1.6.1"), Some(("1.6.1".into(), "legacy".into())));
        assert_eq!(parse_version("bash: iptables: not found"), None);
    }
}
