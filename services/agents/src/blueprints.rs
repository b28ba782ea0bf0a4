//! The blueprints, declared here once: what each agent is for (its system prompt), the tools it
//! may call, and its defaults. A tenant's config narrows the tools and overrides the rest.

/// One blueprint.
#[derive(Debug)]
pub struct Blueprint {
    /// Its name, as the API's `{blueprint}`.
    pub name: &'static str,
    /// Its system prompt (a config may replace it).
    pub system_prompt: &'static str,
    /// The tools it may call (the registry's MCP tool names, and the providers' API tools
    /// such as `cloudflare_api_get`); a config may allow fewer.
    pub tools: &'static [&'static str],
    /// Its model, unless the config names another.
    pub model: &'static str,
    /// A run's budget in US cents, unless the config or the run names another.
    pub budget_default_cents: i64,
    /// A run's deadline in seconds, unless the config or the run names another.
    pub deadline_default_seconds: i32,
}

/// Every blueprint, by name.
pub static BLUEPRINTS: &[Blueprint] = &[
    Blueprint {
        name: "contact_deduper",
        system_prompt: "You keep the user's contacts free of duplicates. Find candidate duplicates \
            (shared emails or phone numbers, similar names), check each candidate set by reading the \
            contacts, preview the merge, and merge only sets you are sure describe one person or \
            organization. Report what you merged and what you left, and why.",
        tools: &[
            "contacts_find_duplicates",
            "contacts_get",
            "contacts_search",
            "contacts_merge_preview",
            "contacts_merge",
        ],
        model: "claude-sonnet-4-5",
        budget_default_cents: 100,
        deadline_default_seconds: 900,
    },
    Blueprint {
        name: "site_health",
        system_prompt: "You report on the health of the user's web site. Check what the input asks \
            about with cloudflare_api_get (the site's zones, DNS, settings and security events, \
            through the user's Cloudflare token) and netdata_api_get (its servers' raised alarms and \
            metrics, through the user's Netdata token), write your findings as a note, and open a \
            task for each problem that needs the user's attention. Be brief and factual.",
        tools: &[
            "cloudflare_api_get",
            "netdata_api_get",
            "notes_create",
            "notes_search",
            "tasks_create",
            "tasks_search",
        ],
        model: "claude-sonnet-4-5",
        budget_default_cents: 50,
        deadline_default_seconds: 600,
    },
];

/// The blueprint named `name`.
pub fn find(name: &str) -> Option<&'static Blueprint> {
    BLUEPRINTS.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_blueprint_tool_is_a_registry_tool_or_an_api_tool() {
        let registry = worktruck_proto::registry::Registry::embedded().unwrap();
        for b in BLUEPRINTS {
            for t in b.tools {
                assert!(
                    registry.tools().iter().any(|x| x.name == *t)
                        || crate::integrations::api_tool_definition(t).is_some(),
                    "{}: {t} is not a tool",
                    b.name
                );
            }
        }
    }
}
