//! `[settings.agents]`: where Anthropic and the integration keys' providers are, the price
//! table, and the worker's pace. Read once
//! at start by the service and by every worker, and checked before anything runs.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

/// The agents service's settings (`WORKTRUCK_SETTINGS__AGENTS__<KEY>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The Anthropic API's base URL (tests point it at a local fake); https, or http on loopback.
    pub anthropic_base_url: String,
    /// The operator's Anthropic key, used by runs of a tenant that has not brought its own.
    /// Empty: such runs fail with `no_api_key`. Never logged or returned.
    pub anthropic_api_key: SecretString,
    /// The `anthropic-version` header.
    pub anthropic_version: String,
    /// `max_tokens` of every LLM turn.
    pub max_tokens: u32,
    /// The most LLM turns a run takes before it fails with `max_turns`.
    pub max_turns: u32,
    /// Retries of an LLM call that Anthropic answered 409, 429, 5xx or 529 (or did not answer).
    pub max_retries: u32,
    /// The first wait before a retry, in milliseconds; it doubles per retry, with jitter, and a
    /// `retry-after` header wins when longer.
    pub backoff_ms: u64,
    /// The longest wait before one retry, in milliseconds.
    pub backoff_max_ms: u64,
    /// The timeout of one LLM call, in seconds.
    pub request_timeout_seconds: u64,
    /// A claim's lease, in seconds: a worker that has not heartbeaten for this long loses its
    /// run to another.
    pub lease_seconds: u64,
    /// How often an idle worker looks for runs to claim (the bus wakes it sooner), in
    /// milliseconds.
    pub poll_ms: u64,
    /// How often each worker's scheduler looks for due schedule ticks, in milliseconds.
    pub schedule_poll_ms: u64,
    /// How many runs one worker runs at once.
    pub concurrency: usize,
    /// How many times a run may be claimed (a crash, a lapsed lease or a database failure each
    /// cost one) before it fails with `too_many_attempts` rather than being taken up forever.
    pub max_attempts: i32,
    /// The price of each model, in US dollars per million tokens.
    pub prices: BTreeMap<String, Price>,
    /// Cloudflare's API, where integration keys of `cloudflare` are verified; https, or http on
    /// loopback (tests point these at a local fake). Netdata has none: its `base_url` is the
    /// tenant's, in the key's metadata.
    pub cloudflare_base_url: String,
    /// GitHub's REST API.
    pub github_base_url: String,
    /// Postmark's API.
    pub postmark_base_url: String,
    /// Outstand's API.
    pub outstand_base_url: String,
    /// The timeout of one verify call to a provider, in seconds.
    pub verify_timeout_seconds: u64,
}

/// A model's price, in US dollars per million tokens (which is millionths of a dollar per
/// token). Cache prices default as Anthropic prices them: reads at 0.1 times the input price,
/// writes (5-minute) at 1.25 times.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Uncached input tokens.
    pub input: f64,
    /// Output tokens (thinking included).
    pub output: f64,
    /// Tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Tokens written to the prompt cache.
    #[serde(default)]
    pub cache_write: Option<f64>,
}

/// The tokens one LLM turn used, as Anthropic reports them (absent fields are 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Uncached input tokens.
    pub input: i64,
    /// Output tokens.
    pub output: i64,
    /// Tokens read from the cache.
    pub cache_read: i64,
    /// Tokens written to the cache.
    pub cache_write: i64,
}

impl Price {
    /// The cost of `u` in millionths of a US dollar, rounded to the nearest.
    pub fn cost_micros(&self, u: Usage) -> i64 {
        let cache_read = self.cache_read.unwrap_or(self.input * 0.1);
        let cache_write = self.cache_write.unwrap_or(self.input * 1.25);
        let micros = u.input as f64 * self.input
            + u.output as f64 * self.output
            + u.cache_read as f64 * cache_read
            + u.cache_write as f64 * cache_write;
        micros.round() as i64
    }
}

impl Default for Settings {
    fn default() -> Self {
        let price = |input: f64, output: f64| Price {
            input,
            output,
            cache_read: None,
            cache_write: None,
        };
        Settings {
            anthropic_base_url: "https://api.anthropic.com".into(),
            anthropic_api_key: SecretString::from(String::new()),
            anthropic_version: "2023-06-01".into(),
            max_tokens: 4096,
            max_turns: 25,
            max_retries: 4,
            backoff_ms: 1000,
            backoff_max_ms: 30_000,
            request_timeout_seconds: 120,
            lease_seconds: 30,
            poll_ms: 2000,
            schedule_poll_ms: 1000,
            concurrency: 8,
            max_attempts: 10,
            prices: BTreeMap::from([
                ("claude-sonnet-4-5".to_owned(), price(3.0, 15.0)),
                ("claude-haiku-4-5".to_owned(), price(1.0, 5.0)),
                ("claude-opus-4-1".to_owned(), price(15.0, 75.0)),
            ]),
            cloudflare_base_url: "https://api.cloudflare.com".into(),
            github_base_url: "https://api.github.com".into(),
            postmark_base_url: "https://api.postmarkapp.com".into(),
            outstand_base_url: "https://api.outstand.so".into(),
            verify_timeout_seconds: 10,
        }
    }
}

impl Settings {
    /// Refuses settings a worker could not run with.
    pub fn check(&self) -> anyhow::Result<()> {
        worktruck_kit::http::require_secure(&self.anthropic_base_url)
            .map_err(|e| anyhow::anyhow!("settings.agents.anthropic_base_url: {e}"))?;
        for (name, url) in [
            ("cloudflare_base_url", &self.cloudflare_base_url),
            ("github_base_url", &self.github_base_url),
            ("postmark_base_url", &self.postmark_base_url),
            ("outstand_base_url", &self.outstand_base_url),
        ] {
            worktruck_kit::http::require_secure(url)
                .map_err(|e| anyhow::anyhow!("settings.agents.{name}: {e}"))?;
        }
        anyhow::ensure!(
            (1..=120).contains(&self.verify_timeout_seconds),
            "settings.agents.verify_timeout_seconds must be 1 to 120"
        );
        anyhow::ensure!(
            self.lease_seconds >= 3,
            "settings.agents.lease_seconds must be at least 3"
        );
        anyhow::ensure!(
            self.concurrency >= 1,
            "settings.agents.concurrency must be at least 1"
        );
        anyhow::ensure!(
            self.max_turns >= 1,
            "settings.agents.max_turns must be at least 1"
        );
        anyhow::ensure!(
            self.max_attempts >= 1,
            "settings.agents.max_attempts must be at least 1"
        );
        anyhow::ensure!(
            self.poll_ms >= 10,
            "settings.agents.poll_ms must be at least 10"
        );
        anyhow::ensure!(
            self.schedule_poll_ms >= 10,
            "settings.agents.schedule_poll_ms must be at least 10"
        );
        for (model, p) in &self.prices {
            let all = [Some(p.input), Some(p.output), p.cache_read, p.cache_write];
            anyhow::ensure!(
                all.iter().flatten().all(|x| x.is_finite() && *x >= 0.0),
                "settings.agents.prices.{model}: prices must be finite and not negative"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_tokens_are_priced_as_anthropic_prices_them() {
        let p = Price {
            input: 3.0,
            output: 15.0,
            cache_read: None,
            cache_write: None,
        };
        // 1,000 input = 3,000; 100 output = 1,500; 1,000 cache reads at 0.3 = 300; 1,000 cache
        // writes at 3.75 = 3,750 millionths of a dollar.
        let u = Usage {
            input: 1000,
            output: 100,
            cache_read: 1000,
            cache_write: 1000,
        };
        assert_eq!(p.cost_micros(u), 3000 + 1500 + 300 + 3750);
        let p = Price {
            cache_read: Some(1.0),
            cache_write: Some(2.0),
            ..p
        };
        assert_eq!(
            p.cost_micros(Usage {
                cache_read: 10,
                cache_write: 10,
                ..Usage::default()
            }),
            30
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(Settings::default().check().is_ok());
        let s = Settings {
            anthropic_base_url: "http://example.com".into(),
            ..Settings::default()
        };
        assert!(s.check().is_err());
        let s = Settings {
            anthropic_base_url: "http://127.0.0.1:9".into(),
            ..Settings::default()
        };
        assert!(s.check().is_ok());
        let s = Settings {
            github_base_url: "http://example.com".into(),
            ..Settings::default()
        };
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("settings.agents.github_base_url"), "{e}");
        let s = Settings {
            postmark_base_url: "http://127.0.0.1:9".into(),
            ..Settings::default()
        };
        assert!(s.check().is_ok());
    }
}
