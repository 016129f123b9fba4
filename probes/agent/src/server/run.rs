//! Running a netprobe command on this node for a caller that reaches it only through the API
//! server (`kubectl netprobe doctor` or `arp --all-services` from a laptop): the agent's own
//! binary, with the agent's capabilities, API access and token, one command at a time, killed
//! after [`RUN_WITHIN_S`]. Only the subcommands that look at a node from the node, and none of the
//! flags that read a file of the node.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use netprobe_probes::vxlan::api::*;

use super::refuse;
use super::state::Agent;

pub(super) async fn run(State(agent): State<Agent>, Json(req): Json<RunRequest>) -> Response {
    if let Some(why) = req.refusal() {
        return refuse(StatusCode::FORBIDDEN, why);
    }
    let Ok(_one) = agent.runs.clone().try_acquire_owned() else {
        return refuse(StatusCode::TOO_MANY_REQUESTS, "a command is running on this agent: try again");
    };
    let (token, node) = (agent.token.to_string(), agent.node_name.as_deref().map(str::to_string));
    let answer = tokio::task::spawn_blocking(move || run_here(&req.argv, &token, node)).await;
    match answer {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(why)) => refuse(StatusCode::SERVICE_UNAVAILABLE, why),
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "the agent's worker failed"),
    }
}

/// Runs `netprobe ARGV` (this agent's binary) and waits for it, at most [`RUN_WITHIN_S`].
fn run_here(argv: &[String], token: &str, node: Option<String>) -> Result<RunAnswer, String> {
    let program = std::env::current_exe().map_err(|e| format!("finding this agent's binary: {e}"))?;
    let mut command = Command::new(program);
    command
        .args(argv)
        .env("NETPROBE_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(node) = &node {
        command.env("NODE_NAME", node);
    }
    let mut child = command.spawn().map_err(|e| format!("starting netprobe: {e}"))?;
    // Both pipes are read on threads of their own, so a chatty command never blocks on a full one.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(RUN_WITHIN_S);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("netprobe {} did not end within {RUN_WITHIN_S} s", argv.join(" ")));
            }
        }
    };
    Ok(RunAnswer {
        node,
        argv: argv.to_vec(),
        exit_code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}
