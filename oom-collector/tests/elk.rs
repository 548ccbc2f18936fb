//! The ELK assets under `deploy/elk/` against what the collector writes:
//! every field of every document (the golden files) is mapped by the index
//! template with a type that fits its values; every ECS field the template
//! maps has ECS's type; the ingest pipeline makes `event.id` the document
//! id; Filebeat keeps the fields at the top level and sends them to the
//! template's data stream through that pipeline; and the Kibana saved
//! objects use only mapped fields and only objects the file defines.

use std::{collections::BTreeMap, fs, path::PathBuf};

use serde_json::Value;

#[expect(
    dead_code,
    reason = "the whole-document ECS check is json.rs's; this file checks the template"
)]
mod common;
use common::{ecs_reference, fits, leaves};

fn elk(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/elk")
        .join(name)
}

fn read(name: &str) -> String {
    fs::read_to_string(elk(name)).unwrap_or_else(|e| panic!("deploy/elk/{name}: {e}"))
}

/// The template's mapping as dotted field -> Elasticsearch type.
fn mapped_fields() -> BTreeMap<String, String> {
    fn walk(prefix: &str, properties: &Value, out: &mut BTreeMap<String, String>) {
        for (name, spec) in properties.as_object().expect("properties object") {
            let field = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match (spec.get("properties"), spec.get("type")) {
                (Some(inner), _) => walk(&field, inner, out),
                (None, Some(es_type)) => {
                    out.insert(field, es_type.as_str().expect("type").to_owned());
                }
                (None, None) => panic!("{field} has neither a type nor properties"),
            }
        }
    }
    let template: Value = serde_json::from_str(&read("index-template.json")).expect("JSON");
    let mut out = BTreeMap::new();
    walk(
        "",
        &template["template"]["mappings"]["properties"],
        &mut out,
    );
    out
}

fn golden_documents() -> Vec<Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut documents = Vec::new();
    for entry in fs::read_dir(&dir).expect("golden dir") {
        let text = fs::read_to_string(entry.expect("entry").path()).expect("golden file");
        documents.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("JSON")),
        );
    }
    assert!(
        documents.len() >= 4,
        "every kind of document has a golden file"
    );
    documents
}

#[test]
fn every_field_the_collector_writes_is_mapped_with_a_fitting_type() {
    let mapped = mapped_fields();
    for document in golden_documents() {
        for (field, value) in leaves(&document) {
            let es_type = mapped
                .get(&field)
                .unwrap_or_else(|| panic!("{field} is written but not mapped by the template"));
            let values: Vec<&Value> = match &value {
                Value::Array(items) => items.iter().collect(),
                single => vec![single],
            };
            for value in values {
                assert!(
                    fits(es_type, value),
                    "{field}: {value} does not fit {es_type}"
                );
            }
        }
    }
}

#[test]
fn mapped_ecs_fields_have_ecs_types() {
    let reference = ecs_reference();
    let ecs = reference["fields"].as_object().expect("fields");
    for (field, es_type) in mapped_fields() {
        match ecs.get(&field) {
            Some(spec) => assert_eq!(
                spec["type"].as_str(),
                Some(es_type.as_str()),
                "{field} is an ECS field of type {}",
                spec["type"]
            ),
            None => assert!(
                field.starts_with("oom.") || field.starts_with("kubernetes."),
                "{field} is neither ECS nor ours"
            ),
        }
    }
}

#[test]
fn the_pipeline_makes_the_event_id_the_document_id() {
    let pipeline: Value = serde_json::from_str(&read("ingest-pipeline.json")).expect("JSON");
    let sets_id = pipeline["processors"]
        .as_array()
        .expect("processors")
        .iter()
        .any(|p| p["set"]["field"] == "_id" && p["set"]["value"] == "{{{event.id}}}");
    assert!(sets_id, "{pipeline}");
}

#[test]
fn filebeat_keeps_fields_at_the_top_level_and_feeds_the_template() {
    let config = read("filebeat.yml");
    let config: Value = serde_saphyr::from_str(&config).expect("filebeat.yml is YAML");
    let inputs = config["filebeat.inputs"].as_array().expect("inputs");
    let [input] = &inputs[..] else {
        panic!("one input: {inputs:?}");
    };
    let ndjson = &input["parsers"][0]["ndjson"];
    assert_eq!(ndjson["target"], "", "fields at the top level");
    assert_eq!(ndjson["expand_keys"], true);
    // On the input, not the output: merged into an existing Filebeat, an
    // index or pipeline on the output would send every other input's logs
    // into the OOM data stream.
    assert_eq!(input["index"], "logs-oom.events-default");
    assert_eq!(input["pipeline"], "oom-events");
    let output = &config["output.elasticsearch"];
    assert!(
        output.get("index").is_none() && output.get("pipeline").is_none(),
        "{output}"
    );
    // Filebeat 9 waits for 1,024 bytes before it reads a file; one kill
    // line is about that.
    let length = input["prospector.scanner.fingerprint"]["length"]
        .as_u64()
        .expect("a fingerprint length");
    assert!((64..=256).contains(&length), "fingerprint length {length}");
    let text = read("filebeat.yml");
    assert!(
        !text.contains("add_kubernetes_metadata"),
        "Filebeat's Kubernetes metadata would describe the collector's pod, not the victim's"
    );
    // Filebeat adds `agent` after the input's processors: only the ingest
    // pipeline can drop it.
    assert!(
        !text.contains("drop_fields"),
        "a drop_fields on the input drops nothing Filebeat adds later"
    );
    let pipeline: Value = serde_json::from_str(&read("ingest-pipeline.json")).expect("JSON");
    let removes_agent = pipeline["processors"]
        .as_array()
        .expect("processors")
        .iter()
        .any(|p| {
            p["remove"]["field"]
                .as_array()
                .is_some_and(|fields| fields.iter().any(|f| f == "agent"))
        });
    assert!(removes_agent, "{pipeline}");
    let template: Value = serde_json::from_str(&read("index-template.json")).expect("JSON");
    assert_eq!(template["index_patterns"][0], "logs-oom.events-*");
}

/// Field names a saved object uses: columns, sort, aggregation fields,
/// the fields a KQL query names, a data view's time field.
fn referenced_fields(object: &Value) -> Vec<String> {
    let attributes = &object["attributes"];
    let mut fields: Vec<String> = Vec::new();
    if let Some(columns) = attributes["columns"].as_array() {
        fields.extend(columns.iter().filter_map(|c| c.as_str().map(str::to_owned)));
    }
    if let Some(sort) = attributes["sort"].as_array() {
        fields.extend(sort.iter().filter_map(|s| s[0].as_str().map(str::to_owned)));
    }
    if let Some(time) = attributes["timeFieldName"].as_str() {
        fields.push(time.to_owned());
    }
    if let Some(state) = attributes["visState"].as_str() {
        let state: Value = serde_json::from_str(state).expect("visState is JSON");
        for aggregation in state["aggs"].as_array().expect("aggs") {
            if let Some(field) = aggregation["params"]["field"].as_str() {
                fields.push(field.to_owned());
            }
        }
    }
    if let Some(source) = attributes["kibanaSavedObjectMeta"]["searchSourceJSON"].as_str() {
        let source: Value = serde_json::from_str(source).expect("searchSourceJSON is JSON");
        let query = source["query"]["query"].as_str().unwrap_or_default();
        fields.extend(
            query
                .split_whitespace()
                .filter_map(|term| term.split_once(':').map(|(f, _)| f.to_owned())),
        );
    }
    fields
}

#[test]
fn saved_objects_use_only_mapped_fields_and_defined_objects() {
    let mapped = mapped_fields();
    let objects: Vec<Value> = read("kibana-saved-objects.ndjson")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let ids: Vec<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                o["type"].as_str().expect("type").into(),
                o["id"].as_str().expect("id").into(),
            )
        })
        .collect();
    for kind in ["index-pattern", "search", "visualization", "dashboard"] {
        assert!(ids.iter().any(|(t, _)| t == kind), "no {kind}");
    }
    let titles: Vec<&str> = objects
        .iter()
        .filter_map(|o| o["attributes"]["title"].as_str())
        .collect();
    assert!(
        titles.contains(&"OOM kills"),
        "the saved search people look for: {titles:?}"
    );
    for object in &objects {
        for field in referenced_fields(object) {
            assert!(
                mapped.contains_key(&field),
                "{} uses {field}, which the template does not map",
                object["id"]
            );
        }
        for reference in object["references"].as_array().expect("references") {
            let wanted = (
                reference["type"].as_str().expect("type").to_owned(),
                reference["id"].as_str().expect("id").to_owned(),
            );
            assert!(
                ids.contains(&wanted),
                "{} refers to {wanted:?}, not in the file",
                object["id"]
            );
        }
    }
}

/// Winning over the built-in `logs` template must not lose what it gives:
/// the data stream's own fields and settings come from the same component
/// templates, the data stream expires, and what Filebeat's ndjson parser
/// adds on a line it cannot parse (`error.message`, `error.type`) is mapped.
#[test]
fn the_template_composes_the_built_in_logs_components_and_expires() {
    let template: Value = serde_json::from_str(&read("index-template.json")).expect("JSON");
    let names = |key: &str| -> Vec<&str> {
        template[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}"))
            .iter()
            .filter_map(Value::as_str)
            .collect()
    };
    let composed = names("composed_of");
    for component in ["logs@mappings", "logs@settings", "ecs@mappings"] {
        assert!(composed.contains(&component), "{component} in {composed:?}");
    }
    let optional = names("ignore_missing_component_templates");
    for component in composed.iter().filter(|c| c.ends_with("@custom")) {
        assert!(optional.contains(component), "{component} may be missing");
    }
    assert!(
        template["template"]["lifecycle"]["data_retention"].is_string(),
        "a retention"
    );
    assert_eq!(
        template["template"]["settings"]["index.lifecycle.prefer_ilm"], false,
        "the data stream lifecycle, not logs@settings' ILM policy, manages it"
    );
    let mapped = mapped_fields();
    for field in ["error.message", "error.type"] {
        assert!(mapped.contains_key(field), "{field} is mapped");
    }
}
