//! The documentation's recipes, checked against what they configure: every
//! Helm value the Kubernetes recipe in docs/openmetadata.md sets must exist in
//! the openmetadata chart (a copy of its values.yaml is kept under
//! tests/fixtures/), and the recipe must set what the chart's templates need
//! before they inject the OIDC secret and the JWT key paths.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

const DOCS: &str = include_str!("../docs/openmetadata.md");
const CHART_VALUES: &str = include_str!("fixtures/openmetadata-helm-values.yaml");
/// The first line of the docs' values block.
const VALUES_MARKER: &str = "# values.yaml for the openmetadata Helm chart";

/// Key paths (`a.b.c`) of a YAML document and their scalar values ("" for a
/// nested block). Enough YAML for values files: block mappings, comments, and
/// lists, whose items are user content and are not descended into.
fn key_paths(yaml: &str) -> BTreeMap<String, String> {
    let mut paths = BTreeMap::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut list_at: Option<usize> = None;
    for line in yaml.lines() {
        let text = line.trim_start();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let indent = line.len() - text.len();
        if let Some(at) = list_at {
            if indent > at || (indent == at && text.starts_with("- ")) {
                continue;
            }
            list_at = None;
        }
        if text.starts_with("- ") {
            list_at = Some(indent);
            continue;
        }
        let Some((key, value)) = text.split_once(':') else {
            panic!("not a key line: {line:?}");
        };
        let value = match value.find(" #") {
            Some(comment) => &value[..comment],
            None => value,
        }
        .trim();
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let path: Vec<&str> = stack
            .iter()
            .map(|(_, k)| k.as_str())
            .chain([key.trim()])
            .collect();
        paths.insert(path.join("."), value.to_string());
        if value.is_empty() {
            stack.push((indent, key.trim().to_string()));
        }
    }
    paths
}

/// The YAML block of the docs that starts with [`VALUES_MARKER`].
fn docs_values() -> &'static str {
    let start = DOCS
        .find(VALUES_MARKER)
        .expect("docs/openmetadata.md has the chart's values block");
    let block = &DOCS[start..];
    &block[..block.find("```").expect("the block ends")]
}

#[test]
fn every_helm_value_the_docs_set_exists_in_the_chart() {
    let chart = key_paths(CHART_VALUES);
    let docs = key_paths(docs_values());
    assert!(docs.len() > 10, "the values block was read: {docs:?}");
    let missing: Vec<&String> = docs
        .keys()
        .filter(|path| {
            // A path exists, or sits under a free-form `{}` / `[]` slot the
            // chart leaves to the user (podSecurityContext, extraEnvs, …).
            let mut at = path.as_str();
            loop {
                if let Some(value) = chart.get(at) {
                    return !(at == path.as_str() || value == "{}" || value == "[]");
                }
                match at.rsplit_once('.') {
                    Some((parent, _)) => at = parent,
                    None => return true,
                }
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "values the chart does not have: {missing:?}"
    );
}

#[test]
fn the_docs_set_what_the_chart_needs_to_inject_oidc_and_jwt_settings() {
    let docs = key_paths(docs_values());
    let auth = "openmetadata.config.authentication";
    for (path, want) in [
        // The chart sets OIDC_* (and reads OIDC_CLIENT_ID/SECRET from its
        // Secret) only for a confidential client with oidcConfiguration on.
        (format!("{auth}.provider"), "custom-oidc"),
        (format!("{auth}.clientType"), "confidential"),
        (format!("{auth}.oidcConfiguration.enabled"), "true"),
        (
            format!("{auth}.oidcConfiguration.clientId.secretRef"),
            "oidc-secrets",
        ),
        (
            format!("{auth}.oidcConfiguration.clientSecret.secretRef"),
            "oidc-secrets",
        ),
        (
            "openmetadata.config.jwtTokenConfiguration.enabled".to_string(),
            "true",
        ),
        // OM runs as uid/gid 1000: the mounted key files must be readable by
        // that group.
        ("podSecurityContext.fsGroup".to_string(), "1000"),
    ] {
        assert_eq!(docs.get(&path).map(String::as_str), Some(want), "{path}");
    }
    for path in [
        "oidcType",
        "discoveryUri",
        "callbackUrl",
        "serverUrl",
        "clientAuthenticationMethod",
    ] {
        let path = format!("{auth}.oidcConfiguration.{path}");
        assert!(
            docs.get(&path).is_some_and(|v| !v.is_empty()),
            "{path} is set"
        );
    }
    assert!(
        docs_values().contains("defaultMode: 0440"),
        "the key Secret is mounted group-readable"
    );
}

#[test]
fn the_yaml_reader_reads_paths_and_skips_list_items() {
    let paths =
        key_paths("a:\n  b: 1 # note\n  list:\n  - x: 1\n    y: 2\n  - z\n  c: {}\nd: two\n");
    let keys: Vec<&str> = paths.keys().map(String::as_str).collect();
    assert_eq!(keys, ["a", "a.b", "a.c", "a.list", "d"]);
    assert_eq!(paths["a.b"], "1");
    assert_eq!(paths["a.c"], "{}");
}
