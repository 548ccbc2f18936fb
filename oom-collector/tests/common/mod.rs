//! Helpers shared by the wire-format tests and the fuzz targets (which
//! include this file by path): a document's leaves, and its checks
//! against the Elastic Common Schema.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Every leaf of a document, by dotted name. Arrays of values are leaves;
/// the items of an array of objects are walked under the array's name.
pub fn leaves(value: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    let name = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&name, inner, out);
                }
            }
            // A list of objects (`oom.memcg.tasks`): Elasticsearch maps the
            // fields of its items, as if each were the only one.
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                for item in items {
                    walk(prefix, item, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// The ECS field reference vendored in `tests/fixtures/ecs/` (see its
/// README): every ECS field's type and allowed values. Built in, so that
/// the fuzz targets, which include this file, have it too.
pub fn ecs_reference() -> Value {
    serde_json::from_str(include_str!("../fixtures/ecs/ecs_fields.json"))
        .expect("tests/fixtures/ecs/ecs_fields.json is JSON")
}

/// Namespaces that are not ECS: this project's `oom.*`, and the
/// `kubernetes.*` names Filebeat gives application logs.
pub const OWN_NAMESPACES: [&str; 2] = ["oom.", "kubernetes."];

/// Everything in `document` that breaks ECS, as sentences: a field that is
/// neither ECS's nor in [`OWN_NAMESPACES`], a value of the wrong type, an
/// array where ECS has none or none where it has one, a value outside
/// ECS's allowed values. `fields` is [`ecs_reference`]'s `fields`.
pub fn ecs_violations(document: &Value, fields: &Map<String, Value>) -> Vec<String> {
    let mut violations = Vec::new();
    for (name, leaf) in leaves(document) {
        let Some(spec) = fields.get(&name) else {
            if !OWN_NAMESPACES.iter().any(|ns| name.starts_with(ns)) {
                violations.push(format!(
                    "{name} is neither an ECS field nor in our own namespaces"
                ));
            }
            continue;
        };
        let es_type = spec["type"].as_str().unwrap_or_default();
        let is_array = spec
            .get("normalize")
            .and_then(Value::as_array)
            .is_some_and(|n| n.iter().any(|v| v == "array"));
        let values: Vec<&Value> = match (&leaf, is_array) {
            (Value::Array(items), true) => items.iter().collect(),
            (Value::Array(_), false) => {
                violations.push(format!("{name} is an array but ECS says it is not"));
                continue;
            }
            (_, true) => {
                violations.push(format!("{name}: ECS normalizes it to an array"));
                continue;
            }
            (single, false) => vec![single],
        };
        for value in values {
            if !fits(es_type, value) {
                violations.push(format!("{name}: {value} is not an ECS {es_type}"));
            }
            if let Some(allowed) = spec.get("allowed_values").and_then(Value::as_array) {
                if !allowed.contains(value) {
                    violations.push(format!(
                        "{name}: {value} is not among ECS's allowed values {allowed:?}"
                    ));
                }
            }
        }
    }
    violations
}

/// Whether a JSON value fits an Elasticsearch field type as ECS declares it.
pub fn fits(es_type: &str, value: &Value) -> bool {
    match es_type {
        "keyword" | "constant_keyword" | "wildcard" | "match_only_text" | "text" => {
            value.is_string()
        }
        "long" | "integer" | "short" | "byte" => value.is_i64() || value.is_u64(),
        "unsigned_long" => value.is_u64(),
        "float" | "scaled_float" | "double" => value.is_number(),
        "boolean" => value.is_boolean(),
        "date" => value
            .as_str()
            .is_some_and(|s| humantime::parse_rfc3339(s).is_ok()),
        "ip" => value
            .as_str()
            .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
        _ => false,
    }
}
