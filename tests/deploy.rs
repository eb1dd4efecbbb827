//! The deploy recipes cannot drift from the binary: every file under
//! `deploy/` parses (YAML, systemd units, the Dockerfile), every `keyward …`
//! command line in them — in commands, arguments and the comments that tell
//! an operator what to run — is accepted by keyward's own CLI parser, and
//! every `KEYWARD_*` variable they set is one keyward reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use clap::{CommandFactory as _, Parser as _};
use keyward::cli::Cli;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("deploy/ exists") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A command line found in a file, and where.
#[derive(Debug)]
struct Found {
    file: String,
    argv: Vec<String>,
}

/// Splits a shell-like line into words: single and double quotes group,
/// `${VAR}` and `$VAR` become a placeholder path.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (q, '$') if q != Some('\'') => {
                // ${VAR} or $VAR: a value the shell or systemd fills in.
                if chars.peek() == Some(&'{') {
                    for c in chars.by_ref() {
                        if c == '}' {
                            break;
                        }
                    }
                } else {
                    while chars
                        .peek()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                    {
                        chars.next();
                    }
                }
                word.push_str("/run/placeholder");
                in_word = true;
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// The `keyward …` commands of a comment or shell line: each segment
/// between `&&`, `|` and `;` that starts with `keyward`, up to a redirection.
fn shell_commands(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for segment in text.split("&&").flat_map(|s| s.split(['|', ';'])) {
        let argv: Vec<String> = words(segment)
            .into_iter()
            .take_while(|w| !w.starts_with('>') && !w.starts_with('<'))
            .collect();
        if argv.first().is_some_and(|w| is_keyward(w)) {
            out.push(argv);
        }
    }
    out
}

fn is_keyward(program: &str) -> bool {
    Path::new(program)
        .file_name()
        .is_some_and(|name| name == "keyward")
}

/// Commands shown in comments: by the recipes' convention, a comment
/// indented three spaces past its `#` is a command to type (prose is not);
/// continuation lines are joined.
fn comment_commands(file: &str, text: &str, found: &mut Vec<Found>) {
    let mut pending = String::new();
    for line in text.lines() {
        let Some(comment) = line
            .trim_start()
            .strip_prefix('#')
            .filter(|c| c.starts_with("   ") || !pending.is_empty())
        else {
            pending.clear();
            continue;
        };
        let comment = comment.trim();
        if let Some(head) = comment.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(comment);
        for argv in shell_commands(&pending) {
            found.push(Found {
                file: file.to_string(),
                argv,
            });
        }
        pending.clear();
    }
}

/// A systemd unit: sections and `Key=Value` lines only; returns its
/// settings as (section, key, value).
fn unit_settings(file: &str, text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{file}:{}: not a Key=Value line: {line}", n + 1));
        assert!(
            !section.is_empty(),
            "{file}:{}: setting outside a section",
            n + 1
        );
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric()),
            "{file}:{}: bad key {key:?}",
            n + 1
        );
        out.push((section.clone(), key.to_string(), value.to_string()));
    }
    out
}

/// Every container or service of a YAML document: Kubernetes containers
/// (`command` + `args`) and Compose services (the image's entrypoint, which
/// is keyward for keyward's image, + `command`).
fn yaml_commands(file: &str, doc: &Yaml, found: &mut Vec<Found>) {
    let strings = |node: &Yaml| -> Option<Vec<String>> {
        match node {
            Yaml::Array(items) => Some(
                items
                    .iter()
                    .map(|i| match i {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(n) => n.to_string(),
                        other => panic!("{file}: non-string argument {other:?}"),
                    })
                    .collect(),
            ),
            Yaml::String(s) => Some(words(s)),
            _ => None,
        }
    };
    match doc {
        Yaml::Hash(map) => {
            let image = doc["image"].as_str().unwrap_or_default();
            let keyward_image = image.contains("keyward");
            let is_k8s_container = !doc["name"].is_badvalue() && !doc["image"].is_badvalue();
            if keyward_image {
                let mut argv = Vec::new();
                if is_k8s_container {
                    argv.extend(strings(&doc["command"]).unwrap_or_default());
                    argv.extend(strings(&doc["args"]).unwrap_or_default());
                } else {
                    argv.extend(
                        strings(&doc["entrypoint"])
                            .unwrap_or_else(|| vec!["/usr/local/bin/keyward".into()]),
                    );
                    argv.extend(strings(&doc["command"]).unwrap_or_default());
                }
                assert!(
                    argv.first().is_some_and(|p| is_keyward(p)),
                    "{file}: a keyward image runs {argv:?}"
                );
                found.push(Found {
                    file: file.to_string(),
                    argv,
                });
            }
            for value in map.values() {
                yaml_commands(file, value, found);
            }
        }
        Yaml::Array(items) => {
            for item in items {
                yaml_commands(file, item, found);
            }
        }
        _ => {}
    }
}

/// Every `KEYWARD_*` variable keyward reads, from its CLI definition.
fn known_variables() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), &mut out);
    // Read by the binary itself rather than a flag.
    out.extend(["KEYWARD_MASTER_KEY".to_string(), "KEYWARD_LOG".to_string()]);
    out
}

/// The `KEYWARD_*` names a text mentions, except ones deploy files define
/// for themselves (`KEYWARD_OM_KEYS`, a Compose path variable).
fn mentioned_variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("KEYWARD_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out.remove("KEYWARD_OM_KEYS");
    // `KEYWARD_*`: the family, not a variable.
    out.remove("KEYWARD_");
    out
}

#[test]
fn every_recipe_parses_and_every_command_is_one_keyward_accepts() {
    let dir = deploy_dir();
    let known = known_variables();
    let mut found = Vec::new();
    let mut units = Vec::new();
    for path in files(&dir) {
        let file = path
            .strip_prefix(&dir)
            .expect("under deploy/")
            .display()
            .to_string();
        let text = std::fs::read_to_string(&path).expect("text file");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        match (name.as_str(), ext.as_str()) {
            (_, "yaml" | "yml") => {
                let docs = YamlLoader::load_from_str(&text)
                    .unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
                assert!(!docs.is_empty(), "{file}: no document");
                for doc in &docs {
                    yaml_commands(&file, doc, &mut found);
                    // An agent configuration in a ConfigMap: the agent must accept it.
                    if let Some(data) = doc["data"].as_hash() {
                        for (key, value) in data {
                            if let (Some(key), Some(text)) = (key.as_str(), value.as_str())
                                && key.ends_with(".toml")
                                && let Err(e) = keyward::agent::AgentConfig::parse(text)
                            {
                                panic!("{file}: keyward agent refuses {key}: {e}");
                            }
                        }
                    }
                }
            }
            (_, "service" | "timer") => {
                let settings = unit_settings(&file, &text);
                for (_, key, value) in &settings {
                    if key.starts_with("Exec") {
                        let value = value.trim_start_matches(['-', '@', ':', '+', '!']);
                        let argv = words(value);
                        if argv.first().is_some_and(|p| is_keyward(p)) {
                            found.push(Found {
                                file: file.clone(),
                                argv,
                            });
                        }
                    }
                }
                units.push((file.clone(), settings));
            }
            ("Dockerfile", _) => {
                let json_of = |instruction: &str| -> Vec<String> {
                    let line = text
                        .lines()
                        .find_map(|l| l.strip_prefix(&format!("{instruction} ")))
                        .unwrap_or_else(|| panic!("{file}: no {instruction}"));
                    serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("{file}: {instruction} not a JSON array: {e}"))
                };
                let mut argv = json_of("ENTRYPOINT");
                argv.extend(json_of("CMD"));
                found.push(Found {
                    file: file.clone(),
                    argv,
                });
                assert!(text.matches("\nFROM ").count() >= 2, "{file}: multi-stage");
                let user = text
                    .lines()
                    .rev()
                    .find_map(|l| l.strip_prefix("USER "))
                    .expect("a USER");
                assert!(
                    !user.starts_with("root") && !user.starts_with('0'),
                    "{file} runs as {user}"
                );
            }
            (_, "toml") => {
                // An agent configuration: the agent itself must accept it.
                if let Err(e) = keyward::agent::AgentConfig::parse(&text) {
                    panic!("{file}: keyward agent refuses it: {e}");
                }
            }
            _ => panic!("{file}: no check knows this kind of file; add one"),
        }
        comment_commands(&file, &text, &mut found);
        let unknown: Vec<_> = mentioned_variables(&text)
            .into_iter()
            .filter(|v| !known.contains(v))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} sets variables keyward does not read: {unknown:?}"
        );
    }

    let mut checked = BTreeSet::new();
    for Found { file, argv } in &found {
        let mut parsed_argv = vec!["keyward".to_string()];
        parsed_argv.extend(argv[1..].iter().cloned());
        if let Err(err) = Cli::try_parse_from(&parsed_argv) {
            panic!("{file}: keyward refuses {argv:?}:\n{}", err.render());
        }
        let matches = Cli::command()
            .try_get_matches_from(&parsed_argv)
            .expect("parsed above");
        let command = matches.subcommand_name().unwrap_or_default().to_string();
        checked.insert((file.clone(), command));
    }
    // The extraction finds what the recipes run (a drift in the extractor
    // would otherwise pass silently).
    for (file, command) in [
        ("systemd/keyward.service", "serve"),
        ("systemd/keyward-rotate.service", "rotate"),
        ("systemd/keyward-rotate.service", "token"),
        ("kubernetes/deployment.yaml", "serve"),
        ("kubernetes/cronjob.yaml", "rotate"),
        ("kubernetes/secret.yaml", "token"),
        ("compose.yaml", "serve"),
        ("compose.yaml", "export"),
        ("Dockerfile", "serve"),
        ("agent.toml", "agent"),
        ("systemd/keyward-agent.service", "agent"),
        ("kubernetes/ingestion-agent.yaml", "agent"),
        ("kubernetes/ingestion-agent.yaml", "token"),
    ] {
        assert!(
            checked.contains(&(file.to_string(), command.to_string())),
            "{file}: no `keyward {command}` found; found {checked:?}"
        );
    }

    // What the hardened unit promises.
    let server = &units
        .iter()
        .find(|(f, _)| f == "systemd/keyward.service")
        .expect("keyward.service")
        .1;
    let setting = |key: &str| {
        server
            .iter()
            .filter(|(s, k, _)| s == "Service" && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("LimitCORE", "0"),
        ("User", "keyward"),
        ("StateDirectory", "keyward"),
    ] {
        assert_eq!(setting(key), [value], "keyward.service {key}");
    }
    assert!(
        !setting("LoadCredential").is_empty(),
        "the master key as a credential"
    );
    assert!(setting("ExecStart")[0].contains("--no-scheduler"));
}

#[test]
fn kubernetes_manifests_hold_their_promises() {
    let dir = deploy_dir().join("kubernetes");
    let load = |name: &str| {
        YamlLoader::load_from_str(&std::fs::read_to_string(dir.join(name)).expect("file"))
            .expect("YAML")
    };
    let deployment = &load("deployment.yaml")[0];
    assert_eq!(deployment["kind"].as_str(), Some("Deployment"));
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"].as_i64(), Some(2));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        container["livenessProbe"]["grpc"]["port"].as_i64(),
        Some(50051)
    );
    let args: Vec<&str> = container["args"]
        .as_vec()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(args.contains(&"--no-scheduler"), "the CronJob rotates");
    assert!(args.iter().any(|a| a.starts_with("--master-key-file=")));
    let env = container["env"].as_vec().expect("env");
    let database_url = env
        .iter()
        .find(|e| e["name"].as_str() == Some("KEYWARD_DATABASE_URL"))
        .expect("KEYWARD_DATABASE_URL");
    assert!(
        database_url["valueFrom"]["secretKeyRef"]["name"]
            .as_str()
            .is_some(),
        "the database URL comes from a Secret"
    );
    // The pod's grace covers keyward's own shutdown grace.
    let grace = env
        .iter()
        .find(|e| e["name"].as_str() == Some("KEYWARD_SHUTDOWN_GRACE"))
        .and_then(|e| e["value"].as_str())
        .map_or(10, |v| {
            keyward::domain::model::parse_duration("shutdown_grace", v)
                .expect("duration")
                .as_secs()
        });
    let termination = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        u64::try_from(termination).unwrap() > grace,
        "terminationGracePeriodSeconds {termination} must exceed keyward's {grace}s"
    );

    let cronjob = &load("cronjob.yaml")[0];
    assert_eq!(cronjob["kind"].as_str(), Some("CronJob"));
    let job = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let token = job["env"]
        .as_vec()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some("KEYWARD_TOKEN"))
        .expect("KEYWARD_TOKEN");
    assert_eq!(
        token["valueFrom"]["secretKeyRef"]["name"].as_str(),
        Some("keyward-rotator"),
        "the CronJob uses a rotator token, not the admin token"
    );
    assert!(
        keyward::domain::cron::Schedule::parse(
            cronjob["spec"]["schedule"].as_str().expect("schedule")
        )
        .is_ok(),
        "the CronJob's schedule is a valid cron line"
    );

    let service = &load("service.yaml")[0];
    assert_eq!(service["kind"].as_str(), Some("Service"));
    let secrets = load("secret.yaml");
    let names: Vec<&str> = secrets
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["keyward", "keyward-rotator"]);
}

#[test]
fn the_word_splitter_and_extractors_work() {
    assert_eq!(
        words(r#"keyward serve --issuer "https://a b" --x=${CREDENTIALS_DIRECTORY}/k"#),
        [
            "keyward",
            "serve",
            "--issuer",
            "https://a b",
            "--x=/run/placeholder/k"
        ]
    );
    assert_eq!(
        shell_commands("head -c 32 /dev/urandom | base64 > k && keyward rotate --dry-run > out"),
        [vec![
            "keyward".to_string(),
            "rotate".into(),
            "--dry-run".into()
        ]]
    );
    // A command the CLI refuses is caught.
    assert!(Cli::try_parse_from(["keyward", "rotate", "--no-such-flag"]).is_err());
    assert!(Cli::try_parse_from(["keyward", "serve", "--no-scheduler"]).is_ok());
    assert!(
        mentioned_variables("KEYWARD_LOG_FORMAT=json KEYWARD_OM_KEYS")
            .contains("KEYWARD_LOG_FORMAT")
    );
}

/// systemd's own checker accepts the units (every directive known, the
/// timer's calendar valid), and rates the server's exposure as low.
#[test]
fn systemd_accepts_the_units_and_rates_them_hardened() {
    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        common::skipped("systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for path in files(&deploy_dir().join("systemd")) {
        // The binary where this build put it (systemd checks it exists).
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin/keyward", env!("CARGO_BIN_EXE_keyward"));
        let copy = dir.path().join(path.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        units.push(copy);
    }
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(dir.path().join("keyward.service"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let level: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for keyward.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(level <= 2.0, "exposure {level}:\n{report}");
}
