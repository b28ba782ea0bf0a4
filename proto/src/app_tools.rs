//! The tools a tenant's apps offer to its callers (its MCP sessions and its agents), read from
//! an `worktruck.apps.v1.App` as JSON: each enabled tool of an `active` app that is neither
//! stale nor changed since it was approved, named `<slug>__<tool>` to fit MCP's and the Messages
//! API's `^[a-zA-Z0-9_-]{1,64}$`. One definition, so the MCP gateway and the agents offer the
//! same tools under the same names.

use std::collections::HashSet;
use std::future::Future;

use serde_json::{Map, Value, json};

/// What separates an app's slug from its tool's name (a slug has no `_`).
pub const SEPARATOR: &str = "__";
/// The longest tool name (`^[a-zA-Z0-9_-]{1,64}$`).
const MAX_NAME: usize = 64;
/// Apps listed per page, and pages read, when collecting a tenant's app tools (the bound).
pub const PAGE: i64 = 200;
pub const MAX_PAGES: usize = 10;

/// The name of `tool` of the app `slug`: `<slug>__<tool>`, each character outside
/// `[a-zA-Z0-9_-]` an `_`; a name longer than 64 characters is cut and ends in a hash of the
/// whole tool name, so two long names do not meet.
pub fn tool_name(slug: &str, tool: &str) -> String {
    let mapped: String = tool
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    let name = format!("{slug}{SEPARATOR}{mapped}");
    if name.len() <= MAX_NAME && !tool.is_empty() {
        return name;
    }
    // FNV-1a of the original name: stable across processes and releases.
    let hash = tool.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let suffix = format!("-{hash:08x}");
    let keep = MAX_NAME - suffix.len();
    format!("{}{suffix}", &name[..keep.min(name.len())])
}

/// The slug in an app tool's name, if it is one.
pub fn slug_of(name: &str) -> Option<&str> {
    let (slug, tool) = name.split_once(SEPARATOR)?;
    (!slug.is_empty() && !tool.is_empty()).then_some(slug)
}

/// One tool an app offers.
#[derive(Debug, Clone, PartialEq)]
pub struct AppTool {
    /// Its name for callers (`<slug>__<tool>`).
    pub name: String,
    /// The app's slug.
    pub slug: String,
    /// The tool's name on its server.
    pub upstream: String,
    /// Its description, naming the app it comes from.
    pub description: String,
    /// Its title, when the server gives one.
    pub title: Option<String>,
    /// Its input schema as the server gave it, `"type": "object"` when it says no type.
    pub input_schema: Map<String, Value>,
    /// Its output schema, when the server gives one.
    pub output_schema: Option<Map<String, Value>>,
    /// The server's annotations (`read_only_hint`, `destructive_hint`, …), as mirrored.
    pub annotations: Value,
}

impl AppTool {
    /// The arguments of `CallAppTool` for a call of this tool with `arguments`.
    pub fn call_arguments(&self, arguments: Map<String, Value>) -> Value {
        json!({"slug": self.slug, "tool": self.upstream, "arguments": arguments})
    }
}

/// What an app offers: its tools, and those whose name another tool took first (server
/// name, name), for the caller to report.
#[derive(Debug, Default)]
pub struct Offer {
    pub tools: Vec<AppTool>,
    pub collisions: Vec<(String, String)>,
}

/// The tools `app` (an `App` as JSON) offers; a name in `taken`, or one two tools map to, is
/// offered for the first of them (by server name) only, and the others are collisions.
pub fn offered(app: &Value, taken: &HashSet<String>) -> Offer {
    let mut out = Offer::default();
    let slug = app["slug"].as_str().unwrap_or_default();
    if app["status"].as_str() != Some("active") || slug.is_empty() || slug.contains('_') {
        return out;
    }
    let enabled: HashSet<&str> = app["enabled_tools"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut tools: Vec<&Value> = app["discovered_tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["name"].as_str().is_some_and(|n| enabled.contains(n)))
                .filter(|t| !t["stale"].as_bool().unwrap_or(false) && !t["changed"].as_bool().unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    tools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let mut seen = HashSet::new();
    let app_name = app["display_name"].as_str().unwrap_or(slug);
    for t in tools {
        let upstream = t["name"].as_str().unwrap_or_default();
        let name = tool_name(slug, upstream);
        if taken.contains(&name) || !seen.insert(name.clone()) {
            out.collisions.push((upstream.to_owned(), name));
            continue;
        }
        let mut input = t["input_schema"].as_object().cloned().unwrap_or_default();
        input.entry("type").or_insert_with(|| json!("object"));
        let description = match t["description"].as_str() {
            Some(d) if !d.is_empty() => format!("{d}\n\n(App {app_name}: tool {upstream} of its MCP server.)"),
            _ => format!("Tool {upstream} of the app {app_name}."),
        };
        out.tools.push(AppTool {
            name,
            slug: slug.to_owned(),
            upstream: upstream.to_owned(),
            description,
            title: t["title"].as_str().map(str::to_owned),
            input_schema: input,
            output_schema: t["output_schema"].as_object().filter(|o| !o.is_empty()).cloned(),
            annotations: t["annotations"].clone(),
        });
    }
    out
}

/// Every tool of a tenant's apps, reading `ListApps` pages through `list` (its arguments, its
/// answer as JSON) up to [`MAX_PAGES`]; `Err` when the first page fails, and the tools so far
/// when a later one does. The second value says whether apps were left unread.
pub async fn collect<F, Fut, E>(mut list: F, taken: &HashSet<String>) -> Result<(Offer, bool), E>
where
    F: FnMut(Value) -> Fut,
    Fut: Future<Output = Result<Value, E>>,
{
    let mut out = Offer::default();
    let mut cursor: Option<String> = None;
    for page_no in 0..MAX_PAGES {
        let mut args = json!({"limit": PAGE});
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let page = match list(args).await {
            Ok(page) => page,
            Err(e) if page_no == 0 => return Err(e),
            Err(_) => return Ok((out, true)),
        };
        let mut taken = taken.clone();
        taken.extend(out.tools.iter().map(|t| t.name.clone()));
        for app in page["data"].as_array().into_iter().flatten() {
            let o = offered(app, &taken);
            taken.extend(o.tools.iter().map(|t| t.name.clone()));
            out.tools.extend(o.tools);
            out.collisions.extend(o.collisions);
        }
        cursor = page["next_cursor"].as_str().filter(|c| !c.is_empty()).map(str::to_owned);
        if cursor.is_none() || !page["has_more"].as_bool().unwrap_or(false) {
            return Ok((out, false));
        }
    }
    Ok((out, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_long_ones_stay_apart() {
        assert_eq!(tool_name("github", "create_issue"), "github__create_issue");
        assert_eq!(tool_name("my-app", "files.read/all"), "my-app__files_read_all");
        let long_a = tool_name("a-very-long-application-slug-xx", &"t".repeat(60));
        let long_b = tool_name("a-very-long-application-slug-xx", &format!("{}u", "t".repeat(59)));
        for n in [&long_a, &long_b] {
            assert_eq!(n.len(), 64, "{n}");
            assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{n}");
        }
        assert_ne!(long_a, long_b);
        assert_eq!(slug_of("github__create_issue"), Some("github"));
        assert_eq!(slug_of("contacts_list"), None);
    }

    fn tool(name: &str, stale: bool, changed: bool) -> Value {
        json!({"name": name, "description": "d", "input_schema": {"properties": {}}, "stale": stale, "changed": changed,
               "annotations": {"read_only_hint": true}})
    }

    #[test]
    fn only_enabled_fresh_approved_tools_of_active_apps_are_offered() {
        let app = json!({
            "slug": "x", "display_name": "X", "status": "active",
            "enabled_tools": ["a", "b", "c", "d.e", "d_e"],
            "discovered_tools": [tool("a", false, false), tool("b", true, false), tool("c", false, true),
                                 tool("d.e", false, false), tool("d_e", false, false), tool("off", false, false)],
        });
        let o = offered(&app, &HashSet::new());
        let names: Vec<&str> = o.tools.iter().map(|t| t.name.as_str()).collect();
        // `d.e` and `d_e` meet at `x__d_e`: the first by server name keeps it.
        assert_eq!(names, ["x__a", "x__d_e"]);
        assert_eq!(o.collisions, [("d_e".to_owned(), "x__d_e".to_owned())]);
        assert_eq!(o.tools[0].input_schema.get("type"), Some(&json!("object")));
        assert_eq!(o.tools[0].annotations["read_only_hint"], json!(true));
        assert_eq!(o.tools[1].upstream, "d.e");
        assert_eq!(
            o.tools[1].call_arguments(Map::new()),
            json!({"slug": "x", "tool": "d.e", "arguments": {}})
        );
        assert!(offered(&app, &HashSet::from(["x__a".to_owned()])).tools.iter().all(|t| t.name != "x__a"));
        let mut disabled = app.clone();
        disabled["status"] = json!("disabled");
        assert!(offered(&disabled, &HashSet::new()).tools.is_empty());
    }

    #[test]
    fn collecting_reads_every_page_and_stops_at_the_bound() {
        let app = |slug: &str| json!({"slug": slug, "status": "active", "enabled_tools": ["t"], "discovered_tools": [tool("t", false, false)]});
        let pages = [
            json!({"data": [app("a"), app("b")], "has_more": true, "next_cursor": "c1"}),
            json!({"data": [app("c")], "has_more": false, "next_cursor": ""}),
        ];
        let mut asked = Vec::new();
        let (offer, left) = block_on(collect(
            |args: Value| {
                asked.push(args.clone());
                let page = if args.get("cursor").is_some() { pages[1].clone() } else { pages[0].clone() };
                async move { Ok::<_, ()>(page) }
            },
            &HashSet::new(),
        ))
        .unwrap();
        let names: Vec<&str> = offer.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a__t", "b__t", "c__t"]);
        assert!(!left);
        assert_eq!(asked[1]["cursor"], json!("c1"));
        // A server that always has more is read MAX_PAGES times, then reported as left.
        let mut calls = 0;
        let (_, left) = block_on(collect(
            |_| {
                calls += 1;
                async { Ok::<_, ()>(json!({"data": [], "has_more": true, "next_cursor": "again"})) }
            },
            &HashSet::new(),
        ))
        .unwrap();
        assert!(left);
        assert_eq!(calls, MAX_PAGES);
        // A first page that fails is the caller's error.
        assert!(block_on(collect(|_| async { Err::<Value, _>("down") }, &HashSet::new())).is_err());
    }

    /// Runs a future that never waits (the test's pages are ready at once).
    fn block_on<F: Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut cx = Context::from_waker(Waker::noop());
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}
