//! Serving an HTTP API (the agent's) on a TCP listener until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;

use super::signal;
use crate::{Error, Result};

/// Binds `listen` (so an address that cannot be served fails before anything is announced),
/// then calls `ready` and serves `app` until Ctrl-C or SIGTERM.
pub fn serve(listen: SocketAddr, app: Router, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let runtime = super::runtime("starting the agent", Some(2))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Error::could_not_run(format!("listening on {listen}"), e.to_string()))?;
        ready(listener.local_addr().unwrap_or(listen));
        signal::catch_interrupts();
        let stopped = async {
            while !signal::interrupted() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
            .map_err(|e| Error::could_not_run("serving the agent API", e.to_string()))
    })
}
