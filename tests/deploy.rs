//! The deployment, tested as far as this machine allows (no cluster, no container engine): the
//! manifests as `kubectl apply -k` renders them, valid against Kubernetes 1.30's schemas and
//! holding what the agent needs; the runtime image's root file system (deploy/image/build-rootfs.sh,
//! mmdebstrap) running the binary and the agent inside a network namespace; the binary as a
//! kubectl plugin; the krew manifest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use netprobe_lab::{lab_or_skip, skip};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A program on PATH (or at one of `also`), or `None` with the skip recorded. `installed_by_ci`:
/// .ci/run installs it, so under CI=true its absence is a failure, not a skip.
fn tool(test: &str, name: &str, also: &[PathBuf], installed_by_ci: bool) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = also.iter().chain(on_path.iter()).find(|p| p.is_file()).cloned();
    if found.is_none() {
        assert!(!(installed_by_ci && in_ci()), "{test}: .ci/run installs {name}, and it is missing");
        skip(test, &format!("{name} is not installed"));
    }
    found
}

/// kubernetes-validate and the Python beside it (PyYAML comes with it), from .ci/run's venv.
fn validator(test: &str) -> Option<(PathBuf, PathBuf)> {
    let venv = repo().join(".ci/venv/bin");
    let validate = tool(test, "kubernetes-validate", &[venv.join("kubernetes-validate")], true)?;
    let python = validate.parent().unwrap().join("python3");
    Some((validate, if python.is_file() { python } else { PathBuf::from("python3") }))
}

fn run_with_input(program: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// YAML documents as JSON values, read by PyYAML.
fn yaml_documents(python: &Path, yaml: &[u8]) -> Vec<Value> {
    let script = "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))";
    let output = run_with_input(python, &["-c", script], yaml);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in the manifests"))
}

#[test]
fn the_manifests_apply_k_renders_validate_against_kubernetes_1_30_and_hold_what_the_agent_needs() -> TestResult
{
    let test = "deploy-manifests";
    let Some(kubectl) = tool(test, "kubectl", &[], false) else { return Ok(()) };
    let Some((validate, python)) = validator(test) else { return Ok(()) };
    let dir = repo().join("deploy/kubernetes");

    // Every manifest in the folder is listed in the kustomization, so apply -k installs them all.
    let kustomization = yaml_documents(&python, &std::fs::read(dir.join("kustomization.yaml"))?);
    let mut listed: Vec<String> = kustomization[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let mut present: Vec<String> = std::fs::read_dir(&dir)?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    listed.sort();
    present.sort();
    assert_eq!(listed, present);

    let rendered = Command::new(&kubectl).arg("kustomize").arg(&dir).output()?;
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    let checked =
        run_with_input(&validate, &["--kubernetes-version", "1.30.0", "--strict", "-"], &rendered.stdout);
    let report =
        String::from_utf8_lossy(&checked.stdout).into_owned() + &String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{report}");
    assert_eq!(report.matches("passed for resource").count(), present.len(), "{report}");

    let documents = yaml_documents(&python, &rendered.stdout);
    // RBAC, read only: get and list on nodes (and watch: the mesh follows them), services and
    // endpointslices; nothing else.
    let mut granted: Vec<String> = Vec::new();
    for rule in kind(&documents, "ClusterRole")["rules"].as_array().unwrap() {
        let verbs: Vec<&str> =
            rule["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let resources: Vec<&str> =
            rule["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        let want: &[&str] = if resources == ["nodes"] { &["get", "list", "watch"] } else { &["get", "list"] };
        assert_eq!(verbs, want, "{rule}");
        granted.extend(resources.iter().map(|r| r.to_string()));
    }
    granted.sort();
    assert_eq!(granted, ["endpointslices", "nodes", "services"]);
    // The Role a person binds to reach the agents through the API server: the pods and their
    // proxy in the agents' namespace, nothing else.
    let user = kind(&documents, "Role");
    assert_eq!(user["metadata"]["namespace"], "netprobe");
    let rules: Vec<(String, String)> = user["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| {
            let verbs: Vec<String> =
                rule["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
            let resources: Vec<String> = rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect();
            resources.into_iter().flat_map(move |r| verbs.clone().into_iter().map(move |v| (r.clone(), v)))
        })
        .collect();
    let want = [("pods", "list"), ("pods/proxy", "get"), ("pods/proxy", "create")];
    assert_eq!(rules, want.map(|(r, v)| (r.to_string(), v.to_string())));
    let binding = kind(&documents, "ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["namespace"], "netprobe");

    let daemonset = kind(&documents, "DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "runs on control-plane and tainted nodes too: {pod}"
    );
    let agent = &pod["containers"][0];
    assert_eq!(agent["args"][0], "agent");
    let args = agent["args"].to_string();
    assert!(args.contains("--mesh-every") && args.contains("--peers-from-api"), "{args}");
    let env = |name: &str| {
        agent["env"].as_array().unwrap().iter().find(|e| e["name"] == name).cloned().unwrap_or(Value::Null)
    };
    assert_eq!(env("NETPROBE_TOKEN")["valueFrom"]["secretKeyRef"]["name"], "netprobe-token");
    assert_eq!(env("NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    let security = &agent["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["capabilities"]["add"], serde_json::json!(["NET_RAW", "NET_ADMIN"]));
    let readiness = &agent["readinessProbe"]["httpGet"];
    assert_eq!(readiness["path"], "/healthz");
    assert_eq!(
        readiness["port"],
        netprobe_probes::vxlan::api::DEFAULT_AGENT_PORT,
        "the port vxlan --all-nodes calls"
    );
    assert!(agent["resources"]["requests"].is_object() && agent["resources"]["limits"].is_object());
    Ok(())
}

/// The netprobe metric names in a text (PromQL or the exposition), each once.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("netprobe_"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_alerts_and_the_dashboard_ask_only_for_what_the_agent_exposes_and_promtool_agrees() -> TestResult {
    use netprobe_agent::metrics::{Metrics, Outcome};
    let test = "deploy-prometheus";
    let Some((_, python)) = validator(test) else { return Ok(()) };
    let dir = repo().join("deploy/prometheus");

    // What an agent's /metrics holds once it has judged a good pair and a bad one, served a
    // request, ended an evaluation, and read a conntrack table (this host's may not be loaded).
    let metrics = Metrics::reading_conntrack_with(|| {
        use netprobe_agent::metrics::conntrack::Reading;
        use netprobe_probes::net::conntrack::{ConntrackStats, TableSize};
        Some(Reading {
            size: TableSize { entries: 1, max: 262_144 },
            stats: Some(ConntrackStats::default()),
            table_full: Some((0, None)),
        })
    });
    let judged = Outcome::Judged {
        verdict: "ok",
        up: true,
        sent: 5,
        arrived: 5,
        period: (5, 5),
        jitter_s: Some(0.0001),
        cause: None,
    };
    metrics.record_pair("a", "b", judged);
    let cause = Some("dropped at b by -A INPUT -p udp --dport 8472 -j DROP".to_string());
    let bad = Outcome::Judged {
        verdict: "dropped-at-destination",
        up: false,
        sent: 5,
        arrived: 0,
        period: (5, 0),
        jitter_s: None,
        cause,
    };
    metrics.record_pair("c", "b", bad);
    metrics.count_peers("b");
    metrics.record_request("/v1/send", 200);
    metrics.record_round(Duration::from_secs(1), std::time::SystemTime::now());
    let exposed = metric_names(&metrics.encode());

    let rule = &yaml_documents(&python, &std::fs::read(dir.join("prometheusrule.yaml"))?)[0];
    let dashboard: Value = serde_json::from_slice(&std::fs::read(dir.join("grafana-dashboard.json"))?)?;
    let mut asked = metric_names(&rule.to_string());
    asked.extend(metric_names(&dashboard.to_string()));
    for name in &asked {
        assert!(exposed.contains(name), "{name} is asked for but the agent does not expose it: {exposed:?}");
    }
    assert!(asked.len() >= 6, "{asked:?}");

    // The ServiceMonitor scrapes a port the Service has.
    let monitor = &yaml_documents(&python, &std::fs::read(dir.join("servicemonitor.yaml"))?)[0];
    let service = &yaml_documents(&python, &std::fs::read(repo().join("deploy/kubernetes/service.yaml"))?)[0];
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], service["spec"]["ports"][0]["name"]);

    // promtool (Prometheus's own) checks the rules and runs the alert's unit test.
    let Some(promtool) = tool(test, "promtool", &[], true) else { return Ok(()) };
    let work = std::env::temp_dir().join(format!("netprobe-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    std::fs::write(
        work.join("rules.yml"),
        serde_json::json!({"groups": rule["spec"]["groups"]}).to_string(),
    )?;
    std::fs::copy(dir.join("prometheus-rules-test.yaml"), work.join("test.yaml"))?;
    for args in [&["check", "rules", "rules.yml"][..], &["test", "rules", "test.yaml"]] {
        let output = Command::new(&promtool).args(args).current_dir(&work).output()?;
        assert!(
            output.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

#[test]
fn the_krew_manifest_names_the_binary_and_the_capabilities() -> TestResult {
    let Some((_, python)) = validator("deploy-krew") else { return Ok(()) };
    let plugin = &yaml_documents(&python, &std::fs::read(repo().join("deploy/krew/netprobe.yaml"))?)[0];
    assert_eq!(plugin["kind"], "Plugin");
    assert_eq!(plugin["apiVersion"], "krew.googlecontainertools.github.com/v1alpha2");
    assert_eq!(plugin["metadata"]["name"], "netprobe", "krew links it as kubectl-netprobe");
    let caveats = plugin["spec"]["caveats"].as_str().unwrap();
    assert!(caveats.contains("CAP_NET_RAW") && caveats.contains("CAP_NET_ADMIN"), "{caveats}");
    for platform in plugin["spec"]["platforms"].as_array().unwrap() {
        assert_eq!(platform["bin"], "netprobe");
    }
    Ok(())
}

#[test]
fn kubectl_runs_netprobe_as_its_plugin() -> TestResult {
    let test = "kubectl-plugin";
    let Some(kubectl) = tool(test, "kubectl", &[], false) else { return Ok(()) };
    let dir = std::env::temp_dir().join(format!("netprobe-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("kubectl-netprobe");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_netprobe"), &link)?;
    let path = std::env::join_paths(
        std::iter::once(dir.clone())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )?;
    let kubectl_run = |args: &[&str]| Command::new(&kubectl).args(args).env("PATH", &path).output().unwrap();

    let listed = kubectl_run(&["plugin", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("kubectl-netprobe"), "{listed:?}");
    let version = kubectl_run(&["netprobe", "--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("netprobe {}", env!("CARGO_PKG_VERSION"))
    );

    // Arguments and exit codes pass through kubectl unchanged (an offline analysis: no packets).
    let dump = repo().join("tests/corpus/iptables/shorewall.rules");
    let args = ["iptables", "--file", dump.to_str().unwrap(), "-o", "json"];
    let direct = Command::new(env!("CARGO_BIN_EXE_netprobe")).args(args).output()?;
    let through = kubectl_run(&[&["netprobe"][..], &args].concat());
    assert_eq!(through.status.code(), direct.status.code());
    assert_eq!(through.stdout, direct.stdout);

    // Usage errors name the command as typed (an offline subcommand: this runs in the host's own
    // network namespace, where no probe may go).
    let usage = kubectl_run(&["netprobe", "iptables", "--no-such-flag"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("Usage: kubectl netprobe iptables"), "{usage:?}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The image's root file system, built once per checkout of the build script and package list
/// (the binary is replaced each run).
fn rootfs(test: &str) -> Option<PathBuf> {
    let mmdebstrap = tool(test, "mmdebstrap", &[], true)?;
    let _ = mmdebstrap;
    let script = repo().join("deploy/image/build-rootfs.sh");
    let stamp_text = std::fs::read_to_string(&script).unwrap()
        + &std::fs::read_to_string(repo().join("deploy/image/runtime-packages")).unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rootfs");
    let stamp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rootfs.stamp");
    let binary = env!("CARGO_BIN_EXE_netprobe");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(stamp_text.as_str()) {
        let built = Command::new(&script).args([binary, dir.to_str().unwrap()]).output().unwrap();
        assert!(built.status.success(), "build-rootfs.sh: {}", String::from_utf8_lossy(&built.stderr));
        std::fs::write(&stamp, stamp_text).unwrap();
    } else {
        std::fs::copy(binary, dir.join("usr/local/bin/netprobe")).unwrap();
    }
    Some(dir)
}

/// `argv` run from the root file system, in namespace `ns`, with /proc mounted in a mount
/// namespace of its own (so nothing is mounted on this machine).
fn in_image(rootfs: &Path, argv: &str) -> Vec<String> {
    let root = rootfs.display();
    vec![
        "unshare".into(),
        "--mount".into(),
        "sh".into(),
        "-c".into(),
        format!("mount -t proc proc {root}/proc && exec chroot {root} {argv}"),
    ]
}

#[test]
fn the_image_root_file_system_holds_every_library_the_binary_and_the_agent_need() -> TestResult {
    let test = "deploy-image";
    let Some(mut lab) = lab_or_skip(test) else { return Ok(()) };
    let Some(rootfs) = rootfs(test) else { return Ok(()) };
    let node = lab.host("img")?;
    let run = |argv: Vec<String>| node.command(&argv[0]).args(&argv[1..]).output().unwrap();

    let version = run(in_image(&rootfs, "/usr/local/bin/netprobe --version"));
    assert!(version.status.success(), "{}", String::from_utf8_lossy(&version.stderr));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("netprobe {}", env!("CARGO_PKG_VERSION"))
    );

    // The live iptables analysis reads the namespace's tables with the image's iptables-save.
    node.sh(
        "iptables -A INPUT -p udp --dport 8472 -j ACCEPT && iptables -A INPUT -p udp --dport 8472 -j ACCEPT",
    )?;
    let tables = run(in_image(&rootfs, "/usr/local/bin/netprobe iptables -o json"));
    let report: Value = serde_json::from_slice(&tables.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&tables.stderr)));
    assert!(report["rulesets"].as_array().is_some_and(|r| !r.is_empty()), "{report}");

    // The agent starts from the image, answers the kubelet's probe, and names its node.
    let agent = in_image(
        &rootfs,
        "env NETPROBE_TOKEN=image-token NODE_NAME=img-node /usr/local/bin/netprobe agent --listen 127.0.0.1:9473",
    );
    let argv: Vec<&str> = agent.iter().map(String::as_str).collect();
    lab.spawn(&node, &argv)?;
    node.wait_listening("tcp", 9473, Duration::from_secs(20))?;
    // A plain HTTP request from bash's /dev/tcp: no client in the namespace needed.
    let get = |path: &str, token: &str| {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/9473 && printf 'GET {path} HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer {token}\\r\\nConnection: close\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
        );
        let output = node.command("bash").args(["-c", &script]).output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let healthz = get("/healthz", "");
    assert!(healthz.starts_with("HTTP/1.1 200") && healthz.ends_with("ok"), "{healthz}");
    let health = get("/v1/health", "image-token");
    assert!(health.contains(r#""node":"img-node""#), "{health}");
    Ok(())
}
