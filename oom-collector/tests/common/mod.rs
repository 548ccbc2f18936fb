//! Helpers shared by the wire-format tests.

use std::{collections::BTreeMap, path::Path};

use serde_json::Value;

/// Every leaf of a document, by dotted name. Arrays are leaves.
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
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

pub fn ecs_reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/ecs/ecs_fields.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the ECS reference {} is unreadable ({e}); it lives in shared/ beside the checkout",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("ecs_fields.json is JSON")
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
