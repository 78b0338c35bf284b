//! The Helm charts' structure, checked without helm (which cannot be installed here).
//!
//! Each chart has Chart.yaml (apiVersion v2, name = directory), values.yaml and templates;
//! every `.Values.x.y` a template references is defined in values.yaml and every top-level
//! value is used; the templates, rendered with the chart's own values by a small renderer
//! that understands what they use (`.Values`, `.Release`, `.Chart`, `default`, `quote`,
//! `required`; control lines dropped), are YAML with the expected objects: the control
//! plane's Service ports, one replica with a PVC and `/readyz` readiness; the daemon's
//! DaemonSet with the `driver-loader` init container, exactly its capabilities and host
//! networking. Every flag a template passes exists in the real binary's `--help`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

fn chart_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm").join(name)
}

fn load_yaml(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn templates(chart: &str) -> Vec<(String, String)> {
    let mut v: Vec<_> = std::fs::read_dir(chart_dir(chart).join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "tpl" || e == "txt"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    v.sort();
    v
}

/// Every `.Values.a.b.c` in `text`.
fn value_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(".Values.") {
        let tail = &rest[i + ".Values.".len()..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).unwrap_or(tail.len());
        out.insert(tail[..end].trim_end_matches('.').to_owned());
        rest = &tail[end..];
    }
    out
}

fn lookup<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(values, |v, k| v.as_mapping()?.get(Value::String(k.to_owned())))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => serde_yaml_ng::to_string(other).unwrap().trim().to_owned(),
    }
}

/// Evaluates one `{{ ... }}` action of the kinds the charts use.
fn eval(expr: &str, values: &Value, app_version: &str) -> String {
    let term = |t: &str| -> String {
        let t = t.trim();
        if let Some(p) = t.strip_prefix(".Values.") {
            lookup(values, p).map(scalar).unwrap_or_default()
        } else {
            match t {
                ".Release.Name" => "test".into(),
                ".Release.Namespace" => "riptides-test".into(),
                ".Chart.AppVersion" => app_version.into(),
                "." => "ITEM".into(),
                other => panic!("unsupported template term {other:?}"),
            }
        }
    };
    let mut stages = expr.split('|');
    let first = stages.next().unwrap().trim();
    let mut v = match first.strip_prefix("required ") {
        Some(rest) => {
            let arg = rest.rsplit(' ').next().unwrap();
            let v = term(arg);
            if v.is_empty() {
                "REQUIRED".into()
            } else {
                v
            }
        }
        None => term(first),
    };
    for stage in stages {
        let stage = stage.trim();
        if let Some(d) = stage.strip_prefix("default ") {
            if v.is_empty() {
                v = term(d);
            }
        } else if stage == "quote" {
            v = format!("{v:?}");
        } else {
            panic!("unsupported pipeline stage {stage:?}");
        }
    }
    v
}

/// Renders a template: control lines (`if`/`with`/`range`/`end`, `toYaml`) are dropped,
/// both branches of an `if` are kept (they only hold optional entries), actions are
/// replaced by their values.
fn render(text: &str, values: &Value, app_version: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("{{") && t.ends_with("}}") && !t.contains("}}{{") {
            let inner = t.trim_start_matches("{{").trim_end_matches("}}").trim_matches('-').trim();
            let control = ["if ", "with ", "range ", "end", "else"].iter().any(|k| inner.starts_with(k));
            if control || inner.starts_with("toYaml") {
                continue;
            }
        }
        let mut rest = line;
        while let Some(i) = rest.find("{{") {
            out.push_str(&rest[..i]);
            let j = rest[i..].find("}}").expect("closed action") + i;
            let inner = rest[i + 2..j].trim_matches('-').trim();
            out.push_str(&eval(inner, values, app_version));
            rest = &rest[j + 2..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

struct Chart {
    values: Value,
    objects: Vec<Value>,
    text: String,
}

fn check_chart(name: &str) -> Chart {
    let dir = chart_dir(name);
    let meta = load_yaml(&dir.join("Chart.yaml"));
    assert_eq!(meta["apiVersion"], Value::from("v2"), "{name}: Chart.yaml apiVersion");
    assert_eq!(meta["name"], Value::from(name), "{name}: Chart.yaml name is the directory");
    let version = meta["version"].as_str().expect("version");
    assert_eq!(version.split('.').count(), 3, "{name}: SemVer chart version");
    let app_version = meta["appVersion"].as_str().expect("appVersion").to_owned();
    let values = load_yaml(&dir.join("values.yaml"));
    let values_text = std::fs::read_to_string(dir.join("values.yaml")).unwrap();
    let tpls = templates(name);
    assert!(tpls.iter().any(|(f, _)| f.ends_with(".yaml")), "{name}: no templates");

    let mut used = BTreeSet::new();
    let mut objects = Vec::new();
    let mut all = String::new();
    for (file, text) in &tpls {
        for r in value_refs(text) {
            assert!(
                lookup(&values, &r).is_some(),
                "{name}/templates/{file} uses .Values.{r}, not defined in values.yaml"
            );
            used.insert(r.split('.').next().unwrap().to_owned());
        }
        if file.ends_with(".yaml") {
            let rendered = render(text, &values, &app_version);
            for doc in serde_yaml_ng::Deserializer::from_str(&rendered) {
                let v = <Value as serde::Deserialize>::deserialize(doc)
                    .unwrap_or_else(|e| panic!("{name}/templates/{file} does not render to YAML: {e}\n{rendered}"));
                if !v.is_null() {
                    objects.push(v);
                }
            }
            all.push_str(&rendered);
        }
    }
    for key in values.as_mapping().unwrap().keys() {
        let k = key.as_str().unwrap();
        assert!(used.contains(k), "{name}: values.yaml defines {k}, which no template uses");
        // Documented: a comment right above the key or one of its sub-keys.
        let at = values_text.find(&format!("\n{k}:")).unwrap_or_else(|| panic!("{k} at top level"));
        let block = &values_text[..at];
        let documented = block.trim_end().lines().last().is_some_and(|l| l.trim_start().starts_with('#'))
            || values_text[at + 1..]
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with(' '))
                .any(|l| l.trim_start().starts_with("# --"));
        assert!(documented, "{name}: values.yaml key {k} has no comment");
    }
    Chart { values, objects, text: all }
}

fn object<'a>(c: &'a Chart, kind: &str) -> &'a Value {
    c.objects.iter().find(|o| o["kind"].as_str() == Some(kind)).unwrap_or_else(|| panic!("no {kind}"))
}

/// Every `--flag` in `args` appears in `binary --help`.
fn flags_exist(binary: &str, args: &Value) {
    let exe = Path::new(env!("CARGO_BIN_EXE_riptides")).parent().unwrap().join(binary);
    let help = Command::new(&exe).arg("--help").output().unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    let help = String::from_utf8(help.stdout).unwrap();
    for a in args.as_sequence().unwrap() {
        let a = a.as_str().unwrap();
        let flag = a.split('=').next().unwrap();
        assert!(flag.starts_with("--") && help.contains(&format!("{flag} ")), "{binary} has no flag {flag}:\n{help}");
    }
}

#[test]
fn controlplane_chart() {
    let c = check_chart("controlplane");
    let svc = object(&c, "Service");
    let mut ports: Vec<(u64, String)> = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_u64().unwrap(), p["protocol"].as_str().unwrap().to_owned()))
        .collect();
    ports.sort();
    assert_eq!(ports, [(8001, "TCP".into()), (8080, "TCP".into()), (8443, "TCP".into()), (9443, "UDP".into())]);

    let dep = object(&c, "Deployment");
    assert_eq!(dep["spec"]["replicas"], Value::from(1));
    let pod = &dep["spec"]["template"]["spec"];
    let ctr = &pod["containers"][0];
    assert_eq!(ctr["readinessProbe"]["httpGet"]["path"], Value::from("/readyz"));
    assert_eq!(ctr["readinessProbe"]["httpGet"]["port"], Value::from("health"));
    let named: Vec<_> = ctr["ports"].as_sequence().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in ["api", "quic", "tunnel", "health"] {
        assert!(named.contains(&want), "container port {want}");
    }
    assert_eq!(ctr["securityContext"]["capabilities"]["drop"][0], Value::from("ALL"));
    let pvc = object(&c, "PersistentVolumeClaim");
    assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["claimName"], pvc["metadata"]["name"]);
    assert_eq!(ctr["volumeMounts"][0]["mountPath"], Value::from("/var/lib/riptides-controlplane"));
    assert!(c.text.contains("--trust-domain=riptides.local"));
    flags_exist("riptides-controlplane", &ctr["args"]);
    assert_eq!(c.values["trustDomain"], Value::from("riptides.local"));
}

#[test]
fn daemon_chart() {
    let c = check_chart("daemon");
    let ds = object(&c, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], Value::from(true));
    assert_eq!(pod["hostPID"], Value::from(true));
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], Value::from("driver-loader"));
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        serde_yaml_ng::from_str::<Value>("[SYS_MODULE]").unwrap()
    );
    let script = init["command"][2].as_str().unwrap();
    assert!(script.contains("insmod") && script.contains("userspace") && script.contains("driver-loader.status"));
    let ctr = &pod["containers"][0];
    assert_eq!(
        ctr["securityContext"]["capabilities"]["add"],
        serde_yaml_ng::from_str::<Value>("[NET_ADMIN, SYS_PTRACE, DAC_READ_SEARCH]").unwrap(),
        "the daemon's capabilities: the same three as the systemd unit"
    );
    assert_eq!(ctr["securityContext"]["capabilities"]["drop"][0], Value::from("ALL"));
    assert_eq!(ctr["readinessProbe"]["httpGet"]["path"], Value::from("/readyz"));
    flags_exist("riptides-daemon", &ctr["args"]);
    // The systemd unit grants the same capabilities.
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/riptides-daemon.service")).unwrap();
    assert!(unit.contains("\nCapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH\n"));
}

#[test]
fn node_gatekeeper_chart() {
    let c = check_chart("node-gatekeeper");
    let dep = object(&c, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], Value::from("riptides-node-gatekeeper"));
    let ctr = &pod["containers"][0];
    assert_eq!(ctr["readinessProbe"]["httpGet"]["path"], Value::from("/healthz"));
    assert_eq!(ctr["securityContext"]["capabilities"]["drop"][0], Value::from("ALL"));
    assert!(ctr["securityContext"]["capabilities"]["add"].is_null(), "the gatekeeper needs no capability");
    flags_exist("riptides-node-gatekeeper", &ctr["args"]);
    // It must run on the nodes it taints (tolerations come from values through toYaml).
    assert_eq!(c.values["tolerations"][0]["key"], Value::from("riptides.io/not-ready"));
    assert!(c.text.contains("tolerations:"));
    let hook = object(&c, "ValidatingWebhookConfiguration");
    let hooks = hook["webhooks"].as_sequence().unwrap();
    let pods = hooks.iter().find(|h| h["rules"][0]["resources"][0] == "pods").expect("pods webhook");
    assert_eq!(pods["failurePolicy"], Value::from("Fail"), "protected pods fail closed");
    assert_eq!(pods["objectSelector"]["matchLabels"]["riptides.io/protected"], Value::from("true"));
    assert_eq!(pods["clientConfig"]["service"]["path"], Value::from("/validate"));
    let bindings = hooks.iter().find(|h| h["rules"][0]["resources"][0] == "pods/binding").expect("binding webhook");
    assert_eq!(bindings["failurePolicy"], Value::from("Ignore"));
    let role = object(&c, "ClusterRole");
    let rules = serde_yaml_ng::to_string(&role["rules"]).unwrap();
    assert!(rules.contains("nodes") && rules.contains("patch") && rules.contains("pods"), "{rules}");
    object(&c, "Service");
}

#[test]
fn undefined_values_are_caught() {
    let values: Value = serde_yaml_ng::from_str("a: {b: 1}").unwrap();
    let refs = value_refs("x: {{ .Values.a.b }} y: {{ .Values.a.c | quote }}");
    let missing: Vec<_> = refs.iter().filter(|r| lookup(&values, r).is_none()).collect();
    assert_eq!(missing, ["a.c"]);
}

#[test]
fn frontend_chart() {
    let c = check_chart("frontend");
    let dep = object(&c, "Deployment");
    let ctr = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(ctr["readinessProbe"]["httpGet"]["port"], Value::from("http"));
    assert_eq!(ctr["securityContext"]["capabilities"]["drop"][0], Value::from("ALL"));
    assert_eq!(ctr["securityContext"]["readOnlyRootFilesystem"], Value::from(true));
    flags_exist("riptides-frontend", &ctr["args"]);
    let vol = &dep["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(vol["configMap"]["name"], c.values["controlPlane"]["caConfigMap"]);
    let svc = object(&c, "Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], Value::from("http"));
    assert!(c.text.contains("--cp-ca=/etc/riptides/cp-ca/ca.pem"));
}
