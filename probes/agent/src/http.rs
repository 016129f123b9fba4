//! Serving an HTTP API (the agent's) until SIGINT/SIGTERM, with the limits that keep a caller
//! without the token from holding the agent: a cap on open connections (one more is closed at
//! once), a deadline for the request headers (slowloris, and idle keep-alive connections), a
//! deadline for a whole request (a body dripped in), and a lifetime for a connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

use netprobe_probes::net::signal;
use netprobe_probes::{Error, Result};

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// The request line and headers must arrive within this (also between requests on a
    /// kept-alive connection).
    pub header_timeout: Duration,
    /// A whole request, body and answer included.
    pub request_timeout: Duration,
    /// A connection is closed after this, whatever it does.
    pub connection_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            connection_lifetime: Duration::from_secs(300),
        }
    }
}

/// Work that runs beside the server until it stops (the agent's mesh).
pub type Background = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Binds `listen` (so an address that cannot be served fails before anything is announced),
/// calls `ready` with the bound address, starts the background work it returns, then serves `app`
/// until Ctrl-C or SIGTERM.
pub fn serve(
    listen: SocketAddr,
    app: Router,
    limits: Limits,
    ready: impl FnOnce(SocketAddr) -> Option<Background>,
) -> Result<()> {
    let runtime = netprobe_probes::net::runtime("starting the agent", Some(2))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Error::could_not_run(format!("listening on {listen}"), e.to_string()))?;
        if let Some(background) = ready(listener.local_addr().unwrap_or(listen)) {
            tokio::spawn(background);
        }
        signal::catch_interrupts();
        let app =
            app.layer(axum::middleware::from_fn(move |request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
                    Ok(response) => response,
                    Err(_) => {
                        axum::response::IntoResponse::into_response(axum::http::StatusCode::REQUEST_TIMEOUT)
                    }
                }
            }));
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped() => return Ok(()),
            };
            // Out of descriptors or a reset before accept: keep serving the others.
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(limits.connection_lifetime, connection).await;
                drop(slot);
            });
        }
    })
}

async fn stopped() {
    while !signal::interrupted() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
