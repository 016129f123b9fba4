//! A stand-in for the Kubernetes API server, which cannot run here: a tiny HTTP/1.1 server in a
//! namespace answering GETs with recorded-shape JSON (NodeList, ServiceList, EndpointSliceList,
//! Status), reached through a kubeconfig as a real cluster would be.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
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
    pub port: u16,
    _thread: NsThread,
}

/// A watch's script: for a path prefix, the events (WatchEvent JSON, one a line) and the delay
/// before each, counted from the watch's start.
pub type Watch = (&'static str, Vec<(Duration, String)>);

/// How long a watch stays open after its last event (then it ends, as a server's timeout does).
const WATCH_HOLD: Duration = Duration::from_secs(20);

impl FakeApi {
    pub fn start(ns: &Netns, routes: Vec<(&'static str, u16, String)>) -> FakeApi {
        FakeApi::start_with_watches(ns, routes, Vec::new())
    }

    pub fn start_with_watches(
        ns: &Netns,
        routes: Vec<(&'static str, u16, String)>,
        watches: Vec<Watch>,
    ) -> FakeApi {
        let routes = Arc::new((routes, watches));
        let (thread, port) = NsThread::start(ns, move |stop, ready| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            ready.send(listener.local_addr().unwrap().port()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        // A connection each: a client may keep one open while it opens another.
                        let routes = routes.clone();
                        std::thread::spawn(move || serve(stream, &routes.0, &routes.1));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
        .expect("fake API server started");
        FakeApi { port, _thread: thread }
    }

    /// A kubeconfig pointing at this server (context "lab", a bearer token); removed with it.
    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.kubeconfig_path();
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://127.0.0.1:{}\n\
                 contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: lab\ncurrent-context: lab\n\
                 users:\n- name: lab\n  user:\n    token: lab-token\n",
                self.port
            ),
        )
        .unwrap();
        path
    }
}

impl FakeApi {
    fn kubeconfig_path(&self) -> PathBuf {
        std::env::temp_dir().join(format!("netprobe-kubeconfig-{}-{}", std::process::id(), self.port))
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
fn serve(stream: std::net::TcpStream, routes: &[(&str, u16, String)], watches: &[Watch]) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
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
        }
        let mut body = vec![0; content_length];
        let _ = reader.read_exact(&mut body);
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        if path.contains("watch=") {
            if let Some((_, events)) = watches.iter().find(|(prefix, _)| path.starts_with(prefix)) {
                stream_events(&mut writer, events);
                return;
            }
        }
        let (status, body) = routes
            .iter()
            .find(|(prefix, _, _)| path.starts_with(prefix))
            .map(|(_, status, body)| (*status, body.clone()))
            .unwrap_or((
                404,
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
                    .into(),
            ));
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
