//! The ELK assets under `deploy/elk/` against what the collector writes:
//! every field of every document (the golden files) is mapped by the index
//! template with a type that fits its values; every ECS field the template
//! maps has ECS's type; the ingest pipeline makes `event.id` the document
//! id; Filebeat keeps the fields at the top level and sends them to the
//! template's data stream through that pipeline; and the Kibana saved
//! objects use only mapped fields and only objects the file defines, in the
//! format current Kibana exports (Lens, migration versions, panel references).

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

/// The field names a KQL query names: what stands before each `:` outside
/// quotes (`event.action:"oom_kill" and kubernetes.pod.name : web-*`).
fn kql_fields(query: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut quoted = false;
    let mut before = String::new();
    for c in query.chars() {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => {
                let field: String = before
                    .trim_end()
                    .chars()
                    .rev()
                    .take_while(|c| c.is_ascii_alphanumeric() || "._@".contains(*c))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                assert!(!field.is_empty(), "a `:` without a field in {query:?}");
                fields.push(field);
            }
            _ => {}
        }
        before.push(c);
    }
    fields
}

fn objects() -> Vec<Value> {
    read("kibana-saved-objects.ndjson")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect()
}

fn json_string(object: &Value, pointer: &str) -> Value {
    let text = object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{} has no {pointer}", object["id"]));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{} {pointer}: {e}", object["id"]))
}

/// A Lens object's layers: id -> columns.
fn lens_layers(object: &Value) -> &serde_json::Map<String, Value> {
    object["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
        .as_object()
        .unwrap_or_else(|| panic!("{} has no form-based layers", object["id"]))
}

/// Field names a saved object uses: a search's columns and sort, a data
/// view's time field, the fields every KQL query names, a Lens column's
/// source field, a dashboard control's field.
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
    if attributes["kibanaSavedObjectMeta"]["searchSourceJSON"].is_string() {
        let source = json_string(object, "/attributes/kibanaSavedObjectMeta/searchSourceJSON");
        fields.extend(kql_fields(
            source["query"]["query"].as_str().unwrap_or_default(),
        ));
    }
    if object["type"] == "lens" {
        fields.extend(kql_fields(
            attributes["state"]["query"]["query"]
                .as_str()
                .expect("a Lens query"),
        ));
        for columns in lens_layers(object).values() {
            for column in columns["columns"].as_object().expect("columns").values() {
                let source = column["sourceField"].as_str().expect("sourceField");
                if source != "___records___" {
                    fields.push(source.to_owned());
                }
                if let Some(filter) = column["filter"]["query"].as_str() {
                    fields.extend(kql_fields(filter));
                }
            }
        }
    }
    if attributes["controlGroupInput"]["panelsJSON"].is_string() {
        let controls = json_string(object, "/attributes/controlGroupInput/panelsJSON");
        for control in controls.as_object().expect("controls").values() {
            fields.push(
                control["explicitInput"]["fieldName"]
                    .as_str()
                    .expect("fieldName")
                    .into(),
            );
        }
    }
    fields
}

#[test]
fn kql_fields_are_found_outside_quotes() {
    assert_eq!(
        kql_fields(r#"event.action:"a:b" and kubernetes.pod.name : web-*"#),
        ["event.action", "kubernetes.pod.name"]
    );
    assert!(kql_fields("").is_empty());
}

#[test]
fn saved_objects_use_only_mapped_fields_and_defined_objects() {
    let mapped = mapped_fields();
    let objects = objects();
    let ids: Vec<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                o["type"].as_str().expect("type").into(),
                o["id"].as_str().expect("id").into(),
            )
        })
        .collect();
    for kind in ["index-pattern", "search", "lens", "dashboard"] {
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

/// Kibana 8.x and 9.x import what they export: saved objects that carry
/// their migration versions (an object without them is migrated as if it
/// came from 7.x), Lens rather than the legacy aggregation-based
/// visualizations, and dashboards whose panels refer to their objects by
/// `<panelIndex>:panel_<panelIndex>`. A type version at or past 10.0.0 is
/// a model version that only some 9.x releases know, and refused by the
/// others, so none may be used.
#[test]
fn saved_objects_carry_the_migration_versions_current_kibana_exports() {
    for object in objects() {
        let id = &object["id"];
        assert_eq!(object["coreMigrationVersion"], "8.8.0", "{id}");
        let version = object["typeMigrationVersion"]
            .as_str()
            .unwrap_or_else(|| panic!("{id} has no typeMigrationVersion"));
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("{id}: {version} is not a version"));
        assert_eq!(version.split('.').count(), 3, "{id}: {version}");
        assert!(
            (8..10).contains(&major),
            "{id}: {version} is not a version every Kibana 8.9 and 9.x accepts"
        );
        assert_ne!(
            object["type"], "visualization",
            "{id}: legacy visualization"
        );
    }
}

/// What a Lens visualization draws must exist: each accessor is a column
/// of its layer, each layer reads the data view, each column's type fits
/// the field's mapping, and every byte count is formatted as bytes.
#[test]
fn lens_visualizations_draw_only_columns_they_define() {
    let mapped = mapped_fields();
    let objects = objects();
    let lenses: Vec<&Value> = objects.iter().filter(|o| o["type"] == "lens").collect();
    assert!(lenses.len() >= 3, "the dashboard's charts are Lens objects");
    for lens in lenses {
        let id = &lens["id"];
        let layers = lens_layers(lens);
        for (layer, state) in layers {
            let columns = state["columns"].as_object().expect("columns");
            let mut order: Vec<&str> = state["columnOrder"]
                .as_array()
                .expect("columnOrder")
                .iter()
                .map(|c| c.as_str().expect("column id"))
                .collect();
            order.sort_unstable();
            let mut defined: Vec<&str> = columns.keys().map(String::as_str).collect();
            defined.sort_unstable();
            assert_eq!(order, defined, "{id} layer {layer}: columnOrder");
            let reference = format!("indexpattern-datasource-layer-{layer}");
            assert!(
                lens["references"]
                    .as_array()
                    .expect("references")
                    .iter()
                    .any(|r| r["name"] == reference.as_str() && r["type"] == "index-pattern"),
                "{id}: layer {layer} has no data view reference"
            );
            for (name, column) in columns {
                if let Some(by) = column["params"]["orderBy"]["columnId"].as_str() {
                    assert!(columns.contains_key(by), "{id}: {name} is ordered by {by}");
                }
                let field = column["sourceField"].as_str().expect("sourceField");
                let Some(es_type) = mapped.get(field) else {
                    assert_eq!(field, "___records___", "{id}: {name}");
                    continue;
                };
                let expected = match es_type.as_str() {
                    "date" => "date",
                    "long" | "float" | "double" => "number",
                    "boolean" => "boolean",
                    _ => "string",
                };
                let numeric_result = column["operationType"] != "terms";
                let data_type = column["dataType"].as_str().expect("dataType");
                if !(numeric_result && data_type == "number") {
                    assert_eq!(data_type, expected, "{id}: {name} on {field}");
                }
                if field.ends_with("_bytes") && data_type == "number" {
                    assert_eq!(
                        column["params"]["format"]["id"], "bytes",
                        "{id}: {name} on {field} shows a byte count"
                    );
                }
            }
        }
        let visualization = &lens["attributes"]["state"]["visualization"];
        let has = |layer: &str, column: &Value| {
            let column = column.as_str().expect("accessor");
            layers[layer]["columns"].get(column).is_some()
        };
        match lens["attributes"]["visualizationType"].as_str() {
            Some("lnsXY") => {
                for layer in visualization["layers"].as_array().expect("layers") {
                    let layer_id = layer["layerId"].as_str().expect("layerId");
                    assert!(layers.contains_key(layer_id), "{id}: {layer_id}");
                    assert!(has(layer_id, &layer["xAccessor"]), "{id}: x of {layer_id}");
                    if !layer["splitAccessor"].is_null() {
                        assert!(has(layer_id, &layer["splitAccessor"]), "{id}: split");
                    }
                    for accessor in layer["accessors"].as_array().expect("accessors") {
                        assert!(has(layer_id, accessor), "{id}: {accessor}");
                    }
                }
            }
            Some("lnsDatatable") => {
                let layer_id = visualization["layerId"].as_str().expect("layerId");
                for column in visualization["columns"].as_array().expect("columns") {
                    assert!(has(layer_id, &column["columnId"]), "{id}: {column}");
                }
                assert!(has(layer_id, &visualization["sorting"]["columnId"]), "{id}");
            }
            Some("lnsMetric") => {
                let layer_id = visualization["layerId"].as_str().expect("layerId");
                assert!(has(layer_id, &visualization["metricAccessor"]), "{id}");
            }
            other => panic!("{id}: a visualization type this test does not know: {other:?}"),
        }
    }
}

/// The dashboard answers the first questions after a kill, and its panels
/// fit Kibana's 48-column grid without overlapping.
#[test]
fn the_dashboard_shows_kills_by_pod_top_victims_what_filled_the_limit_and_the_failures_before() {
    let objects = objects();
    let dashboard = objects
        .iter()
        .find(|o| o["type"] == "dashboard")
        .expect("a dashboard");
    let references = dashboard["references"].as_array().expect("references");
    let panels = json_string(dashboard, "/attributes/panelsJSON");
    let mut titles = Vec::new();
    let mut cells: Vec<(u64, u64, u64, u64)> = Vec::new();
    for panel in panels.as_array().expect("panels") {
        let index = panel["panelIndex"].as_str().expect("panelIndex");
        assert_eq!(panel["gridData"]["i"], index);
        assert_eq!(panel["panelRefName"], format!("panel_{index}"));
        let reference = references
            .iter()
            .find(|r| r["name"] == format!("{index}:panel_{index}").as_str())
            .unwrap_or_else(|| panic!("panel {index} has no reference"));
        assert_eq!(reference["type"], panel["type"], "panel {index}");
        let target = objects
            .iter()
            .find(|o| o["id"] == reference["id"] && o["type"] == reference["type"])
            .expect("the panel's object");
        titles.push(target["attributes"]["title"].as_str().expect("title"));
        let grid = |k: &str| panel["gridData"][k].as_u64().expect("grid number");
        let cell = (grid("x"), grid("y"), grid("w"), grid("h"));
        assert!(
            cell.0 + cell.2 <= 48,
            "panel {index} is wider than the grid"
        );
        for other in &cells {
            let apart = cell.0 + cell.2 <= other.0
                || other.0 + other.2 <= cell.0
                || cell.1 + cell.3 <= other.1
                || other.1 + other.3 <= cell.1;
            assert!(apart, "panel {index} overlaps another");
        }
        cells.push(cell);
    }
    for wanted in [
        "OOM kills by pod over time",
        "Top victims by memory",
        "Allocation failures before kills",
        "What filled the limit",
        "Events lost",
    ] {
        assert!(titles.contains(&wanted), "{wanted} not in {titles:?}");
    }
    let by_pod = objects
        .iter()
        .find(|o| o["attributes"]["title"] == "OOM kills by pod over time")
        .expect("kills by pod");
    let columns: Vec<&Value> = lens_layers(by_pod)
        .values()
        .flat_map(|l| l["columns"].as_object().expect("columns").values())
        .collect();
    for (operation, field) in [
        ("date_histogram", "@timestamp"),
        ("terms", "kubernetes.pod.name"),
    ] {
        assert!(
            columns
                .iter()
                .any(|c| c["operationType"] == operation && c["sourceField"] == field),
            "kills by pod has no {operation} on {field}"
        );
    }
}

/// Byte counts read as bytes wherever the data view shows them (Discover,
/// the saved searches), not as 536870912.
#[test]
fn the_data_view_formats_every_byte_field_as_bytes() {
    let objects = objects();
    let view = objects
        .iter()
        .find(|o| o["type"] == "index-pattern")
        .expect("a data view");
    let formats = json_string(view, "/attributes/fieldFormatMap");
    for field in mapped_fields().keys().filter(|f| f.ends_with("_bytes")) {
        assert_eq!(formats[field]["id"], "bytes", "{field}");
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
