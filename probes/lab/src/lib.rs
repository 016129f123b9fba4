#![allow(unsafe_code)] // the lab enters namespaces (setns) and checks its user (geteuid).
//! Network-namespace labs for netprobe's tests and for `netprobe demo`.
//!
//! A [`Lab`] creates namespaces with unique names, wires them with veth pairs and bridges, starts
//! background processes in them, and removes all of it on Drop, also when a test panics. Hosts get
//! addresses only from the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24)
//! chosen by the caller; nothing here sends a packet anywhere.
//!
//! ```no_run
//! let mut lab = netprobe_lab::Lab::new("arp-ok").unwrap();
//! let switch = lab.switch("sw").unwrap();
//! let client = lab.host("client").unwrap();
//! lab.plug(&switch, &client, "192.0.2.1/24", None).unwrap();
//! client.sh("ping -c1 -W1 192.0.2.1").unwrap();
//! ```

pub mod conntrack;
pub mod dns_relay;
pub mod dns_responder;
pub mod dns_servers;
pub mod fake_api;
pub mod iptables_dump;
pub mod overlay;

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug)]
pub struct LabError(pub String);

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabError {}

pub type Result<T> = std::result::Result<T, LabError>;

/// A lab for a test, or `None` (with the reason recorded, see [`skip`]) when this machine cannot
/// make one. Under `CI=true` a missing lab is a failure, never a silent skip.
pub fn lab_or_skip(test: &str) -> Option<Lab> {
    match Lab::new(test) {
        Ok(lab) => Some(lab),
        Err(err) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: CI must be able to build network namespaces: {err}")
        }
        Err(err) => {
            skip(test, &err.0);
            None
        }
    }
}

static SKIPPED: AtomicU32 = AtomicU32::new(0);
static SKIP_REASON: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records a lab test skipped for `reason`. When the test binary exits, one line on its stderr
/// (written past the test harness's capture) says how many were skipped and why, so a run
/// without root is never mistaken for a full run.
pub fn skip(test: &str, reason: &str) {
    let _ = test;
    let _ = SKIP_REASON.set(reason.to_string());
    if SKIPPED.fetch_add(1, Ordering::SeqCst) == 0 {
        // SAFETY: atexit registers a plain function without arguments, called once at exit.
        unsafe { libc::atexit(report_skipped) };
    }
}

extern "C" fn report_skipped() {
    use std::io::Write;
    let n = SKIPPED.load(Ordering::SeqCst);
    let reason = SKIP_REASON.get().map(String::as_str).unwrap_or("no lab here");
    let _ = writeln!(
        std::io::stderr(),
        "netprobe-lab: {n} lab test(s) of this binary were SKIPPED ({reason}): run as root for a full run; CI=true makes this a failure"
    );
}

/// Whether `tool` is on the PATH.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// A set of namespaces and processes that lives as long as this value.
pub struct Lab {
    id: String,
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// Per-namespace counter for the next ethN name.
    next_port: u32,
}

impl Lab {
    /// Checks that namespaces can be made here (root, iproute2) and reserves a unique name prefix.
    pub fn new(tag: &str) -> Result<Lab> {
        Lab::with_prefix("np", tag)
    }

    /// Like [`Lab::new`], with every namespace name starting with `prefix` (so a later
    /// [`remove_leftovers`] can find what a kept or killed lab left behind).
    pub fn with_prefix(prefix: &str, tag: &str) -> Result<Lab> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(LabError("network namespaces need root: run it with sudo".into()));
        }
        run(Command::new("ip").arg("netns").arg("list"))
            .map_err(|e| LabError(format!("iproute2 is needed (apt-get install iproute2): {e}")))?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
        let id = format!("{prefix}{}x{n}-{tag}", std::process::id());
        Ok(Lab { id, prefix: prefix.to_string(), namespaces: Vec::new(), children: Vec::new(), next_port: 0 })
    }

    /// Ends this value without removing anything: the namespaces and processes stay up. Returns the
    /// namespaces' names.
    pub fn keep(mut self) -> Vec<String> {
        // Marked kept: a later run removes leftovers of dead runs, but not these (only --clean).
        let _ = std::fs::create_dir_all(KEPT_DIR);
        let _ = std::fs::write(Path::new(KEPT_DIR).join(self.owner()), "");
        let names = std::mem::take(&mut self.namespaces);
        for child in std::mem::take(&mut self.children) {
            std::mem::forget(child);
        }
        names
    }

    /// The run this lab belongs to: its prefix and the pid of the process that made it.
    fn owner(&self) -> String {
        format!("{}{}", self.prefix, std::process::id())
    }

    /// A new namespace with loopback up.
    pub fn host(&mut self, role: &str) -> Result<Netns> {
        let name = format!("{}-{role}", self.id);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        self.namespaces.push(name.clone());
        let ns = Netns { name };
        ns.sh("ip link set lo up")?;
        Ok(ns)
    }

    /// A namespace holding bridge `br0`: a layer-2 switch that hosts are plugged into.
    pub fn switch(&mut self, role: &str) -> Result<Netns> {
        let ns = self.host(role)?;
        // No STP and no forwarding delay: ports forward as soon as they are up.
        ns.sh("ip link add br0 type bridge forward_delay 0 stp_state 0 && ip link set br0 up")?;
        Ok(ns)
    }

    /// A namespace that routes between its links (ip_forward on): the place for a firewall.
    pub fn router(&mut self, role: &str) -> Result<Netns> {
        let ns = self.host(role)?;
        ns.sh("sysctl -qw net.ipv4.ip_forward=1")?;
        Ok(ns)
    }

    /// Plugs `host` into the bridge of `switch` with a new veth and returns the host side's name
    /// (eth0, eth1, ...). `cidr` is the host's address, `mac` an optional fixed MAC.
    pub fn plug(&mut self, switch: &Netns, host: &Netns, cidr: &str, mac: Option<&str>) -> Result<String> {
        let port = self.next_port;
        self.next_port += 1;
        let inside = format!("eth{}", host.interfaces()?.iter().filter(|i| i.starts_with("eth")).count());
        let outside = format!("p{port}");
        switch.sh(&format!(
            "ip link add {outside} type veth peer name {inside} netns {host} && \
             ip link set {outside} master br0 up",
            host = host.name
        ))?;
        let mac_cmd = mac.map(|m| format!("ip link set {inside} address {m} && ")).unwrap_or_default();
        host.sh(&format!("{mac_cmd}ip addr add {cidr} dev {inside} && ip link set {inside} up"))?;
        Ok(inside)
    }

    /// A point-to-point veth between two namespaces, with an address on each end. Returns the two
    /// interface names (in `a`, in `b`).
    pub fn link(&mut self, a: &Netns, a_cidr: &str, b: &Netns, b_cidr: &str) -> Result<(String, String)> {
        let a_if = format!("eth{}", a.interfaces()?.iter().filter(|i| i.starts_with("eth")).count());
        let b_if = format!("eth{}", b.interfaces()?.iter().filter(|i| i.starts_with("eth")).count());
        a.sh(&format!("ip link add {a_if} type veth peer name {b_if} netns {}", b.name))?;
        a.sh(&format!("ip addr add {a_cidr} dev {a_if} && ip link set {a_if} up"))?;
        b.sh(&format!("ip addr add {b_cidr} dev {b_if} && ip link set {b_if} up"))?;
        Ok((a_if, b_if))
    }

    /// Starts `argv` in `ns` in the background; it is killed when the lab is dropped.
    pub fn spawn(&mut self, ns: &Netns, argv: &[&str]) -> Result<u32> {
        self.spawn_with_stderr(ns, argv, Stdio::null())
    }

    /// [`Lab::spawn`], its standard error going to `stderr` (a file, so that a process that dies
    /// at start can say why).
    pub fn spawn_with_stderr(&mut self, ns: &Netns, argv: &[&str], stderr: impl Into<Stdio>) -> Result<u32> {
        let child = ns
            .command(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| LabError(format!("starting {argv:?} in {}: {e}", ns.name)))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }
}

impl Lab {
    /// How a process started with [`Lab::spawn`] ended, or `None` while it runs.
    pub fn exited(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        let child = self.children.iter_mut().find(|c| c.id() == pid)?;
        child.try_wait().ok().flatten()
    }

    /// Stops a process started with [`Lab::spawn`] (SIGKILL) before the lab ends.
    pub fn kill(&mut self, pid: u32) {
        if let Some(index) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Where kept labs are marked (one empty file per run, named by its owner: prefix and pid).
const KEPT_DIR: &str = "/run/netprobe-lab-kept";

/// The run that made a lab namespace: `{prefix}{pid}` from a name `{prefix}{pid}x{n}-{tag}-{role}`.
fn owner_of(prefix: &str, name: &str) -> Option<(String, u32)> {
    let rest = name.strip_prefix(prefix)?;
    let (pid, _) = rest.split_once('x')?;
    let pid: u32 = pid.parse().ok()?;
    Some((format!("{prefix}{pid}"), pid))
}

/// Whether the process `pid` still runs.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces whose names start with `prefix` that no running process made (leftovers
/// of a run that was killed, or kept ones when `kept_too`), with the processes in them. A run that
/// is still going is never touched. Returns the names removed.
pub fn remove_leftovers(prefix: &str, kept_too: bool) -> Result<Vec<String>> {
    let list = run(Command::new("ip").args(["netns", "list"]))?;
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(name) = line.split_whitespace().next().filter(|n| n.starts_with(prefix)) else { continue };
        let Some((owner, pid)) = owner_of(prefix, name) else { continue };
        let marker = Path::new(KEPT_DIR).join(&owner);
        if pid == std::process::id() || alive(pid) || (marker.exists() && !kept_too) {
            continue;
        }
        if let Ok(pids) = run(Command::new("ip").args(["netns", "pids", name])) {
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).output();
            }
        }
        run(Command::new("ip").args(["netns", "del", name]))?;
        let _ = std::fs::remove_file(marker);
        removed.push(name.to_string());
    }
    Ok(removed)
}

/// A named network namespace (under /run/netns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `program` run inside this namespace (through `ip netns exec`, which also remounts /sys).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs a shell script inside the namespace; its stdout, or an error with its stderr.
    pub fn sh(&self, script: &str) -> Result<String> {
        let output = run(self.command("sh").args(["-c", script]))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The MAC of `interface`, lower case.
    pub fn mac(&self, interface: &str) -> Result<String> {
        Ok(self.sh(&format!("cat /sys/class/net/{interface}/address"))?.trim().to_string())
    }

    pub fn interfaces(&self) -> Result<Vec<String>> {
        let text = self.sh("ls /sys/class/net")?;
        Ok(text.split_whitespace().map(str::to_string).collect())
    }

    /// Waits until something in this namespace listens on `port` (`tcp` or `udp`), up to `timeout`.
    pub fn wait_listening(&self, protocol: &str, port: u16, timeout: Duration) -> Result<()> {
        let flag = if protocol == "udp" { "-Hlun" } else { "-Hltn" };
        let start = std::time::Instant::now();
        while self.sh(&format!("ss {flag} 'sport = :{port}'"))?.trim().is_empty() {
            if start.elapsed() > timeout {
                return Err(LabError(format!(
                    "nothing listens on {protocol} port {port} in {} after {timeout:?}",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits until something in this namespace listens on `address` (`IP:PORT`, `tcp` or `udp`).
    pub fn wait_listening_at(&self, protocol: &str, address: &str, timeout: Duration) -> Result<()> {
        let flag = if protocol == "udp" { "-Hlun" } else { "-Hltn" };
        let start = std::time::Instant::now();
        while self.sh(&format!("ss {flag} 'src {address}'"))?.trim().is_empty() {
            if start.elapsed() > timeout {
                return Err(LabError(format!(
                    "nothing listens on {protocol} {address} in {} after {timeout:?}",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Moves the calling thread into this namespace (setns). Use it on a thread of its own that
    /// ends before the lab is dropped.
    pub fn enter_current_thread(&self) -> Result<()> {
        let file = File::open(format!("/run/netns/{}", self.name))
            .map_err(|e| LabError(format!("opening namespace {}: {e}", self.name)))?;
        // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let err = std::io::Error::last_os_error();
            return Err(LabError(format!("entering namespace {}: {err}", self.name)));
        }
        Ok(())
    }
}

/// `GET path` from inside `ns` to `address` (plain HTTP/1.0): the status line's code and the body.
pub fn http_get(ns: &Netns, address: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    http_request(ns, address, "GET", path, None, "")
}

/// A request from inside `ns` (plain HTTP/1.0, a JSON body, a bearer token if given): the status
/// line's code and the body.
pub fn http_request(
    ns: &Netns,
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let ns = ns.clone();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let what = format!("{method} http://{address}{path}");
    std::thread::spawn(move || {
        ns.enter_current_thread()?;
        let fail = |e: std::io::Error| LabError(format!("{what}: {e}"));
        let mut stream =
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(fail)?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(fail)?;
        stream.write_all(request.as_bytes()).map_err(fail)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(fail)?;
        let code = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_string();
        Ok((code, body))
    })
    .join()
    .map_err(|_| LabError("the HTTP client thread failed".into()))?
}

/// A thread that runs inside a namespace (a user-space responder, a fake API server) until it is
/// dropped. Declare it after the [`Lab`] so it stops before the namespaces go.
pub struct NsThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl NsThread {
    /// Runs `body` on a new thread inside `ns`. `body` sends one value on `ready` once it is set up
    /// (a port, say), which this returns, and must return soon after `stop` turns true.
    pub fn start<R: Send + 'static>(
        ns: &Netns,
        body: impl FnOnce(&AtomicBool, mpsc::Sender<R>) + Send + 'static,
    ) -> Result<(NsThread, R)> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, setup) = mpsc::channel();
        let ns = ns.clone();
        let stopping = stop.clone();
        let handle = std::thread::spawn(move || {
            if ns.enter_current_thread().is_ok() {
                body(&stopping, ready);
            }
        });
        let value = setup
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| LabError("a thread in the lab did not start within 10 s".into()))?;
        Ok((NsThread { stop, handle: Some(handle) }, value))
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

fn run(cmd: &mut Command) -> Result<Output> {
    let output = cmd.output().map_err(|e| LabError(format!("{cmd:?}: {e}")))?;
    if !output.status.success() {
        return Err(LabError(format!(
            "{cmd:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output)
}
