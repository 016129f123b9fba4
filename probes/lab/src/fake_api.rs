//! A stand-in for the Kubernetes API server, which cannot run here: a tiny HTTP/1.1 server in a
//! namespace answering GETs with recorded-shape JSON (NodeList, ServiceList, EndpointSliceList,
//! PodList, Status), streaming watches, and proxying to pods as the API server's `pods/proxy`
//! subresource does (removing the caller's `Authorization`, as the real one does), reached through
//! a kubeconfig as a real cluster would be.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::{Netns, NsThread};

/// Answers on 127.0.0.1 inside a namespace until dropped. Routes are (path prefix, status,
/// body), the first matching prefix wins (list the longer paths first); anything else is a 404
/// Status as the API sends it. A watch (`?watch=...`) of a path with a [`Watch`] gets its events,
/// each after its delay, as the API streams them (a chunk a line), then nothing until it ends.
pub struct FakeApi {
    pub address: SocketAddr,
    /// This instance's number in the process: two stand-ins on one port (in two namespaces, as
    /// concurrent tests run them) keep kubeconfigs of their own.
    instance: u64,
    _thread: NsThread,
}

static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What the stand-in serves, and where.
#[derive(Default)]
pub struct FakeApiConfig {
    /// Where it listens: 127.0.0.1 on a free port when `None`.
    pub listen: Option<SocketAddr>,
    pub routes: Vec<(&'static str, u16, String)>,
    pub watches: Vec<Watch>,
    /// Pods its proxy reaches: (name, address of the pod: a host-network pod's is its node's).
    pub pods: Vec<(String, std::net::IpAddr)>,
}

/// A watch's script: for a path prefix, the events (WatchEvent JSON, one a line) and the delay
/// before each, counted from the watch's start.
pub type Watch = (&'static str, Vec<(Duration, String)>);

/// How long a watch stays open after its last event (then it ends, as a server's timeout does).
const WATCH_HOLD: Duration = Duration::from_secs(20);

impl FakeApi {
    pub fn start(ns: &Netns, routes: Vec<(&'static str, u16, String)>) -> FakeApi {
        FakeApi::serve(ns, FakeApiConfig { routes, ..FakeApiConfig::default() })
    }

    pub fn start_with_watches(
        ns: &Netns,
        routes: Vec<(&'static str, u16, String)>,
        watches: Vec<Watch>,
    ) -> FakeApi {
        FakeApi::serve(ns, FakeApiConfig { routes, watches, ..FakeApiConfig::default() })
    }

    pub fn serve(ns: &Netns, config: FakeApiConfig) -> FakeApi {
        let listen = config.listen.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let config = Arc::new(config);
        let (thread, address) = NsThread::start(ns, move |stop, ready| {
            let listener = TcpListener::bind(listen).unwrap();
            listener.set_nonblocking(true).unwrap();
            ready.send(listener.local_addr().unwrap()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        // A connection each: a client may keep one open while it opens another.
                        let config = config.clone();
                        std::thread::spawn(move || serve(stream, &config));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
        .expect("fake API server started");
        let instance = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        FakeApi { address, instance, _thread: thread }
    }

    /// A kubeconfig pointing at this server (context "lab", a bearer token); removed with it.
    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.kubeconfig_path();
        write_kubeconfig(&path, &format!("http://{}", self.address));
        path
    }
}

/// Writes a kubeconfig for the server at `server` (context "lab", a bearer token) to `path`: for a
/// stand-in that listens on every address, reached at one of them.
pub fn write_kubeconfig(path: &Path, server: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {server}\n\
             contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: lab\ncurrent-context: lab\n\
             users:\n- name: lab\n  user:\n    token: lab-token\n"
        ),
    )
    .unwrap();
}

impl FakeApi {
    fn kubeconfig_path(&self) -> PathBuf {
        std::env::temp_dir().join(format!(
            "netprobe-kubeconfig-{}-{}-{}",
            std::process::id(),
            self.instance,
            self.address.port()
        ))
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.kubeconfig_path());
    }
}

/// A watch's answer: chunked, an event a chunk, then held open until [`WATCH_HOLD`] has passed.
fn stream_events(writer: &mut std::net::TcpStream, events: &[(Duration, String)]) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if writer.write_all(head.as_bytes()).is_err() {
        return;
    }
    let start = std::time::Instant::now();
    for (at, event) in events {
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        let line = format!("{event}\n");
        if writer.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes()).is_err() {
            return;
        }
        let _ = writer.flush();
    }
    std::thread::sleep(WATCH_HOLD);
    let _ = writer.write_all(b"0\r\n\r\n");
}

/// A response body from tests/fixtures/k8s (see its README for where each comes from).
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/k8s").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Answers requests on one keep-alive connection until the client closes it.
fn serve(stream: TcpStream, config: &FakeApiConfig) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            headers.push(header.trim_end().to_string());
        }
        let mut body = vec![0; content_length];
        let _ = reader.read_exact(&mut body);
        let mut words = request_line.split_whitespace();
        let method = words.next().unwrap_or("GET").to_string();
        let path = words.next().unwrap_or("/");
        if path.contains("watch=") {
            if let Some((_, events)) = config.watches.iter().find(|(prefix, _)| path.starts_with(prefix)) {
                stream_events(&mut writer, events);
                return;
            }
        }
        let (status, body) = match proxied(config, &method, path, &headers, &body) {
            Some(answer) => answer,
            None => config
                .routes
                .iter()
                .find(|(prefix, _, _)| path.starts_with(prefix))
                .map(|(_, status, body)| (*status, body.clone()))
                .unwrap_or((
                    404,
                    status_json(404, "NotFound", "the server could not find the requested resource"),
                )),
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A Status as the API server answers with it (the message has no quotes or backslashes).
fn status_json(code: u16, reason: &str, message: &str) -> String {
    let message = message.replace(['"', '\\'], "'");
    format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"{message}","reason":"{reason}","code":{code}}}"#
    )
}

/// `/api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH` to a pod this server knows: the request
/// forwarded to NAME's address and PORT without the caller's `Authorization` (the real API server
/// authenticates the caller with it and removes it, kubernetes issue 38775), and the pod's
/// answer; a pod that does not answer is a 503 Status as the API server gives it. `None` for any
/// other path, and for a pod it does not know (the routes answer those).
fn proxied(
    config: &FakeApiConfig,
    method: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
) -> Option<(u16, String)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (_, rest) = rest.split_once("/pods/")?;
    let (target, forwarded) = rest.split_once("/proxy")?;
    let (pod, port) = target.split_once(':')?;
    let (_, ip) = config.pods.iter().find(|(name, _)| name == pod)?;
    let port: u16 = port.parse().ok()?;
    let forwarded = if forwarded.is_empty() { "/" } else { forwarded };
    let answer = (|| -> std::io::Result<(u16, String)> {
        let mut upstream = TcpStream::connect_timeout(&SocketAddr::new(*ip, port), Duration::from_secs(3))?;
        // As long as an agent may take to run a command for the caller (and a little more).
        upstream.set_read_timeout(Some(Duration::from_secs(150)))?;
        let mut request =
            format!("{method} {forwarded} HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n");
        for header in headers {
            let name = header.split(':').next().unwrap_or_default().to_ascii_lowercase();
            if !matches!(name.as_str(), "authorization" | "host" | "connection") {
                request.push_str(&format!("{header}\r\n"));
            }
        }
        request.push_str("\r\n");
        upstream.write_all(request.as_bytes())?;
        upstream.write_all(body)?;
        let mut answer = String::new();
        upstream.read_to_string(&mut answer)?;
        let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(502);
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((status, body))
    })();
    Some(answer.unwrap_or_else(|e| {
        (
            503,
            status_json(
                503,
                "ServiceUnavailable",
                &format!("error trying to reach service: dial tcp {ip}:{port}: {e}"),
            ),
        )
    }))
}
