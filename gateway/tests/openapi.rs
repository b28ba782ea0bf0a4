//! `/docs/openapi.json` describes exactly the routes the router serves.

mod support;

use serde_json::Value;
use support::*;
use worktruck_proto::registry::Registry;

async fn document(stack: &Stack) -> Value {
    // Served without credentials.
    let answer = stack
        .send(request("GET", "/docs/openapi.json", None, None))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    assert_eq!(answer.headers["content-type"], "application/json");
    answer.json
}

/// Follows a local `$ref` (`#/components/schemas/X`).
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .expect("a component reference");
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "dangling reference {reference}");
            target
        }
        None => schema,
    }
}

#[tokio::test]
async fn every_route_and_nothing_else_is_documented() {
    let stack = spawn().await;
    let doc = document(&stack).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let registry = Registry::embedded().unwrap();
    let paths = doc["paths"].as_object().unwrap();

    let mut documented = 0;
    for (path, item) in paths {
        for (method, _) in item.as_object().unwrap() {
            documented += 1;
            let served = path == "/docs/openapi.json"
                || registry.routes().iter().any(|r| {
                    r.path.as_str() == path && r.method.as_str().eq_ignore_ascii_case(method)
                });
            assert!(served, "{method} {path} is documented but not served");
        }
    }
    assert_eq!(
        documented,
        registry.routes().len() + 1,
        "every route once, plus the document itself"
    );

    for route in registry.routes() {
        let method = route.method.as_str().to_ascii_lowercase();
        let op = &doc["paths"][route.path.as_str()][&method];
        assert!(op.is_object(), "{method} {} missing", route.path);
        assert_eq!(
            op["operationId"],
            format!("{}.{}", route.rpc.parent_service().name(), route.rpc.name())
        );
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{}",
            route.rpc.name()
        );
        assert_eq!(op["tags"][0], route.rpc.parent_service().name());

        let responses = op["responses"].as_object().unwrap();
        let success = if route.rpc.name().starts_with("Create") {
            "201"
        } else {
            "200"
        };
        if route.raw_response() {
            // A google.api.HttpBody answer: its own bytes, whatever their type.
            assert_eq!(responses[success]["content"]["*/*"]["schema"]["format"], "binary", "{}", route.rpc.name());
        } else {
            let schema = &responses[success]["content"]["application/json"]["schema"];
            assert_eq!(
                resolve(&doc, schema)["type"],
                "object",
                "{} has a response schema",
                route.rpc.name()
            );
        }
        for range in ["4XX", "5XX"] {
            let error = &responses[range]["content"]["application/json"]["schema"];
            assert_eq!(error["$ref"], "#/components/schemas/Error");
        }

        // A path parameter per variable, and actual HTTP requests would reach this route.
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        for var in route.path.variables() {
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == var && p["in"] == "path" && p["required"] == true),
                "{var}"
            );
        }
    }
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"][0], "error");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn parameters_and_bodies_follow_the_http_rules() {
    let stack = spawn().await;
    let doc = document(&stack).await;
    let create = &doc["paths"]["/api/v1/contacts"]["post"];
    let body = &create["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(
        body["required"],
        serde_json::json!(["kind", "display_name"])
    );
    assert_eq!(
        body["properties"]["kind"]["enum"],
        serde_json::json!(["person", "organization", "group"])
    );
    assert_eq!(body["additionalProperties"], false);
    let in_of = |op: &serde_json::Value, place: &str| -> Vec<String> {
        op["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["in"] == place).map(|p| p["name"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    assert!(in_of(create, "query").is_empty(), "body `*` routes take no query parameters");
    assert_eq!(in_of(create, "header"), ["Idempotency-Key"]);
    let created = &create["responses"]["201"]["headers"];
    assert!(created["Location"].is_object() && created["ETag"].is_object(), "{created}");
    assert!(create["responses"]["422"].is_object());

    let list = &doc["paths"]["/api/v1/contacts"]["get"];
    let names: Vec<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "kind",
            "q",
            "updated_since",
            "limit",
            "cursor",
            "as_of",
            "valid_at",
            "tag",
            "group_id",
            "organization_id",
            "fields"
        ]
    );
    assert!(list.get("requestBody").is_none());

    let get = &doc["paths"]["/api/v1/contacts/{id}"]["get"];
    let names: Vec<&str> = get["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "as_of", "valid_at", "fields", "If-None-Match"]);
    assert!(get["responses"]["304"].is_object());
    assert!(get["responses"]["200"]["headers"]["ETag"].is_object());
    assert!(get["responses"]["200"]["headers"].get("Location").is_none());
    let update = &doc["paths"]["/api/v1/contacts/{id}"]["patch"];
    assert_eq!(in_of(update, "header"), ["Idempotency-Key", "If-Match"]);
    assert!(update["responses"]["412"].is_object());
    let delete = &doc["paths"]["/api/v1/contacts/{id}"]["delete"];
    assert_eq!(in_of(delete, "header"), ["Idempotency-Key"], "no version to match on a delete");

    let update = &doc["paths"]["/api/v1/contacts/{id}"]["patch"];
    let body = &update["requestBody"]["content"]["application/json"]["schema"];
    assert!(
        body["properties"].get("id").is_none(),
        "path variables are not repeated in the body"
    );
    assert!(body.get("required").is_none());

    // The response of a GET resolves to a Contact with its output-only fields.
    let contact = resolve(
        &doc,
        &get["responses"]["200"]["content"]["application/json"]["schema"],
    );
    assert_eq!(contact["properties"]["id"]["readOnly"], true);
    assert!(contact["properties"]["_temporal"].is_object());
}
