//! Pull-through caching (no IO here): which upstream registry a repository is cached from,
//! under what local name, and the small parsers the driver's upstream requests need. The
//! driver (`registry/proxy`) fetches through the host's [`UpstreamClient`].
//!
//! ```json
//! [
//!   {"prefix": "docker-hub", "namespace": "docker.io",
//!    "urls": ["https://mirror.example", "https://registry-1.docker.io"],
//!    "revalidate": "5m", "stale-if-error": "7d", "immutable-tags": ["semver"]}
//! ]
//! ```
//!
//! A request for `docker-hub/nginx` (the prefix form) or for `library/nginx?ns=docker.io`
//! (the spec's `ns` parameter) is served from the local repository `docker-hub/library/nginx`,
//! filled from `library/nginx` upstream: Docker Hub's one-component names gain `library/`
//! (`library-prefix`, on by default for `docker.io`). Every other repository is an ordinary
//! one: push and cache live in one registry. A rule with the empty prefix makes every
//! repository no other rule routes a cache of its upstream: a mirror at the root, as the
//! Docker daemon's `registry-mirrors` expects (it sends `library/nginx` and no `ns`).

#[cfg(feature = "upstream-http")]
mod http;

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;

use crate::auth::glob::Glob;
use crate::reference::RepositoryName;
use crate::request::{Method, RequestBody};
use crate::retention::TagState;

#[cfg(feature = "upstream-http")]
pub use http::HttpUpstream;

/// Default seconds between two upstream checks of a cached tag.
pub const DEFAULT_REVALIDATE: u64 = 5 * 60;
/// Default seconds a cached tag is still served, with a warning, while its upstream fails.
pub const DEFAULT_STALE_IF_ERROR: u64 = 7 * 24 * 60 * 60;
/// Default seconds an upstream's "not found" is remembered.
pub const DEFAULT_MISSING_FOR: u64 = 60;
/// Seconds an upstream is left alone after it failed without saying for how long.
pub const DEFAULT_BACKOFF: u64 = 5;
/// The longest time between two writes of a cached manifest's last-pull time.
pub const PULL_NOTE_INTERVAL: u64 = 24 * 60 * 60;

/// One upstream rule, as written in the rules' JSON (or `berth serve --upstreams`' TOML).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpstreamRule {
    /// The local namespace the cache lives under (`docker-hub`); empty: the whole registry
    /// (but what other rules route) mirrors this upstream.
    pub prefix: String,
    /// The `ns` query value that also routes here (`docker.io`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Upstream registry base URLs, tried in order (`https://registry-1.docker.io`).
    pub urls: Vec<String>,
    /// Basic credentials for the upstream (or its token service).
    #[serde(default)]
    pub username: Option<String>,
    /// The password or access token that goes with `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// Whether one-component names gain `library/` upstream (Docker Hub's official images).
    /// Default: on when the namespace or a URL is Docker Hub's.
    #[serde(default)]
    pub library_prefix: Option<bool>,
    /// Seconds between two upstream checks (HEAD) of a cached tag.
    #[serde(default = "revalidate_default", deserialize_with = "seconds")]
    pub revalidate: u64,
    /// Seconds a cached tag is still served, with a `Warning`, while the upstream fails.
    #[serde(default = "stale_default", deserialize_with = "seconds")]
    pub stale_if_error: u64,
    /// Seconds an upstream's 404 is remembered.
    #[serde(default = "missing_default", deserialize_with = "seconds")]
    pub missing_for: u64,
    /// Tags never checked again once cached: globs (`v*`), or `semver` for `1.2.3`,
    /// `v1.2.3-rc.1` and the like.
    #[serde(default)]
    pub immutable_tags: Vec<String>,
    /// Seconds after its last pull that cached content is evicted by the garbage
    /// collector's steps (its tags removed; with untagged collection, its manifests and
    /// then its blobs follow). 0, the default: kept.
    #[serde(default, deserialize_with = "seconds")]
    pub evict_after: u64,
    /// At most this many requests open at once to each of the rule's upstream URLs, per
    /// instance (a body counts until it is read or dropped); others wait their turn. 0, the
    /// default: no limit.
    #[serde(default)]
    pub max_concurrent: usize,
}

fn revalidate_default() -> u64 {
    DEFAULT_REVALIDATE
}
fn stale_default() -> u64 {
    DEFAULT_STALE_IF_ERROR
}
fn missing_default() -> u64 {
    DEFAULT_MISSING_FOR
}

fn seconds<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(u64),
        Text(String),
    }
    match Given::deserialize(deserializer)? {
        Given::Number(seconds) => Ok(seconds),
        Given::Text(text) => parse_seconds(&text).map_err(serde::de::Error::custom),
    }
}

/// Parses `90`, `90s`, `30m`, `12h` or `7d` into seconds.
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is no duration (90s, 30m, 12h, 7d)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(format!("{text:?} is no duration (90s, 30m, 12h, 7d)")),
    };
    Ok(number.saturating_mul(scale))
}

impl UpstreamRule {
    /// A rule with the defaults: `prefix` cached from `url`.
    pub fn new(prefix: &str, url: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            namespace: None,
            urls: vec![url.to_owned()],
            username: None,
            password: None,
            library_prefix: None,
            revalidate: DEFAULT_REVALIDATE,
            stale_if_error: DEFAULT_STALE_IF_ERROR,
            missing_for: DEFAULT_MISSING_FOR,
            immutable_tags: Vec::new(),
            evict_after: 0,
            max_concurrent: 0,
        }
    }

    /// How often a cached manifest's last-pull time is written again while it is pulled:
    /// daily, or a quarter of `evict-after` when that is shorter (coarse, but never so
    /// coarse that a hot image looks unpulled).
    pub fn pull_note_interval(&self) -> u64 {
        match self.evict_after {
            0 => PULL_NOTE_INTERVAL,
            after => (after / 4).clamp(1, PULL_NOTE_INTERVAL),
        }
    }

    fn adds_library(&self) -> bool {
        self.library_prefix.unwrap_or_else(|| {
            self.namespace.as_deref() == Some("docker.io")
                || self.urls.iter().any(|url| url.contains("docker.io"))
        })
    }

    /// Whether a cached `tag` is never checked again.
    pub fn is_immutable(&self, tag: &str) -> bool {
        self.immutable_tags
            .iter()
            .any(|pattern| match pattern.as_str() {
                "semver" => is_semver(tag),
                glob => Glob::new(glob).matches(tag),
            })
    }
}

/// What eviction removes from a cached repository at `now` (milliseconds, by the storage's
/// clock): the tags whose image was neither cached nor pulled in the last `evict_after`
/// seconds, and the last-pull times (`(digest, written)`) as old that no kept tag points
/// at (their manifests are left to untagged collection).
pub fn unpulled<'t, 'p>(
    tags: &'t [TagState],
    pulls: &'p [(String, u64)],
    now: u64,
    evict_after: u64,
) -> (Vec<&'t str>, Vec<&'p str>) {
    let window = evict_after.saturating_mul(1000);
    let stale = |at: u64| now.saturating_sub(at) >= window;
    let last_pull = |digest: &str| {
        pulls
            .iter()
            .filter(|(pulled, _)| pulled == digest)
            .map(|(_, at)| *at)
            .max()
    };
    let (evicted, kept): (Vec<&TagState>, Vec<&TagState>) = tags
        .iter()
        .partition(|tag| stale(tag.pushed.max(last_pull(&tag.digest).unwrap_or(0))));
    let forgotten = pulls
        .iter()
        .filter(|(digest, at)| stale(*at) && !kept.iter().any(|tag| tag.digest == *digest))
        .map(|(digest, _)| digest.as_str())
        .collect();
    (
        evicted.iter().map(|tag| tag.name.as_str()).collect(),
        forgotten,
    )
}

/// `1.2.3` or `v1.2.3`, with an optional `-prerelease` and `+build`.
fn is_semver(tag: &str) -> bool {
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    let core = tag.split(['-', '+']).next().unwrap_or_default();
    let numbers: Vec<&str> = core.split('.').collect();
    numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Where a request goes: its rule, the local repository that caches it, and the name
/// upstream.
#[derive(Debug, Clone)]
pub struct Routed {
    /// Which rule ([`Upstreams::rule`]).
    pub rule: usize,
    /// The repository the content is cached in.
    pub local: RepositoryName,
    /// The repository's name upstream.
    pub remote: String,
    /// The `ns` value the request was routed by, echoed as `OCI-Namespace`.
    pub namespace: Option<String>,
}

/// A set of upstream rules, checked, and what this instance remembers of their health.
#[derive(Debug, Default)]
pub struct Upstreams {
    rules: Vec<UpstreamRule>,
    /// Per upstream URL: until when (seconds since the epoch) it is left alone.
    resting: Mutex<HashMap<String, u64>>,
    /// Per last-pull key: when this instance last wrote it.
    pulls_noted: Mutex<HashMap<String, u64>>,
    /// Per upstream URL: requests open to it (counted for rules with `max-concurrent`).
    open: Mutex<HashMap<String, usize>>,
}

/// The most last-pull writes an instance remembers (forgotten all at once beyond).
const PULLS_NOTED_LIMIT: usize = 16 * 1024;

impl Clone for Upstreams {
    fn clone(&self) -> Self {
        Self::checked(self.rules.clone())
    }
}

impl Upstreams {
    /// Checks rules: each has a prefix that is a repository name and at least one URL;
    /// no two share a prefix or a namespace.
    pub fn new(rules: Vec<UpstreamRule>) -> Result<Self, String> {
        for (at, rule) in rules.iter().enumerate() {
            let prefix = rule.prefix.trim_matches('/');
            if !prefix.is_empty() && prefix.parse::<RepositoryName>().is_err() {
                return Err(format!(
                    "upstream prefix {:?} is not a repository name",
                    rule.prefix
                ));
            }
            if rule.urls.is_empty() {
                return Err(format!("upstream {prefix:?} names no URL"));
            }
            for url in &rule.urls {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("upstream {prefix:?}: {url:?} is no http(s) URL"));
                }
            }
            for other in &rules[..at] {
                if other.prefix.trim_matches('/') == prefix {
                    return Err(format!("two upstreams share the prefix {prefix:?}"));
                }
                if rule.namespace.is_some() && other.namespace == rule.namespace {
                    return Err(format!(
                        "two upstreams share the namespace {:?}",
                        rule.namespace
                    ));
                }
            }
        }
        Ok(Self::checked(rules))
    }

    fn checked(rules: Vec<UpstreamRule>) -> Self {
        let rules = rules
            .into_iter()
            .map(|mut rule| {
                rule.prefix = rule.prefix.trim_matches('/').to_owned();
                for url in &mut rule.urls {
                    *url = url.trim_end_matches('/').to_owned();
                }
                rule
            })
            .collect();
        Self {
            rules,
            resting: Mutex::default(),
            pulls_noted: Mutex::default(),
            open: Mutex::default(),
        }
    }

    /// Parses rules from JSON: a list of rules, or `{"upstreams": [...]}`. (Read field by
    /// field rather than derived: the edge build carries this path, and the derived one
    /// costs it several KiB more.)
    pub fn from_json(text: &str) -> Result<Self, String> {
        use serde_json::Value;
        let document: Value =
            serde_json::from_str(text).map_err(|e| format!("upstream rules: {e}"))?;
        let rules = match &document {
            Value::Array(rules) => rules,
            Value::Object(object) => match object.get("upstreams") {
                Some(Value::Array(rules)) => rules,
                _ => return Err("upstream rules: a list, or {\"upstreams\": [...]}".into()),
            },
            _ => return Err("upstream rules: a list, or {\"upstreams\": [...]}".into()),
        };
        let mut parsed = Vec::with_capacity(rules.len());
        for rule in rules {
            let Value::Object(fields) = rule else {
                return Err(format!("upstream rule {rule}: not an object"));
            };
            let mut prefix = None;
            let mut parsed_rule = UpstreamRule::new("", "");
            parsed_rule.urls.clear();
            let strings = |value: &Value| -> Option<Vec<String>> {
                value
                    .as_array()?
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect()
            };
            let seconds = |value: &Value| match value {
                Value::Number(number) => number.as_u64().ok_or_else(|| format!("{number}")),
                Value::String(text) => parse_seconds(text),
                other => Err(format!("{other} is no duration")),
            };
            for (field, value) in fields {
                let text = value.as_str().map(str::to_owned);
                let wrong = || format!("upstream rule {rule}: {field:?} has the wrong type");
                match field.as_str() {
                    "prefix" => prefix = Some(text.ok_or_else(wrong)?),
                    "namespace" => parsed_rule.namespace = Some(text.ok_or_else(wrong)?),
                    "username" => parsed_rule.username = Some(text.ok_or_else(wrong)?),
                    "password" => parsed_rule.password = Some(text.ok_or_else(wrong)?),
                    "urls" => parsed_rule.urls = strings(value).ok_or_else(wrong)?,
                    "immutable-tags" => {
                        parsed_rule.immutable_tags = strings(value).ok_or_else(wrong)?;
                    }
                    "max-concurrent" => {
                        parsed_rule.max_concurrent = value
                            .as_u64()
                            .and_then(|n| usize::try_from(n).ok())
                            .ok_or_else(wrong)?;
                    }
                    "library-prefix" => {
                        parsed_rule.library_prefix = Some(value.as_bool().ok_or_else(wrong)?);
                    }
                    "revalidate" | "stale-if-error" | "missing-for" | "evict-after" => {
                        let seconds = seconds(value)
                            .map_err(|e| format!("upstream rule {rule}: {field:?}: {e}"))?;
                        match field.as_str() {
                            "revalidate" => parsed_rule.revalidate = seconds,
                            "stale-if-error" => parsed_rule.stale_if_error = seconds,
                            "evict-after" => parsed_rule.evict_after = seconds,
                            _ => parsed_rule.missing_for = seconds,
                        }
                    }
                    _ => return Err(format!("upstream rule {rule}: unknown field {field:?}")),
                }
            }
            parsed_rule.prefix =
                prefix.ok_or_else(|| format!("upstream rule {rule}: no prefix"))?;
            parsed.push(parsed_rule);
        }
        Self::new(parsed)
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// A rule by its index.
    pub fn rule(&self, at: usize) -> &UpstreamRule {
        &self.rules[at]
    }

    /// The rules.
    pub fn rules(&self) -> &[UpstreamRule] {
        &self.rules
    }

    /// The rule whose cache the local repository `name` is.
    pub fn owner(&self, name: &RepositoryName) -> Option<&UpstreamRule> {
        self.route(name, None)
            .filter(|routed| routed.local == *name)
            .map(|routed| self.rule(routed.rule))
    }

    /// Whether some rule evicts what is not pulled.
    pub fn evicts(&self) -> bool {
        self.rules.iter().any(|rule| rule.evict_after > 0)
    }

    /// Whether the last-pull time `key` is due to be written at `now` (not written by this
    /// instance in the last `every` seconds); if so, it counts as written now.
    pub fn pull_note_due(&self, key: &str, now: u64, every: u64) -> bool {
        let Ok(mut noted) = self.pulls_noted.lock() else {
            return true;
        };
        if noted
            .get(key)
            .is_some_and(|at| now < at.saturating_add(every))
        {
            return false;
        }
        if noted.len() >= PULLS_NOTED_LIMIT {
            noted.clear();
        }
        noted.insert(key.to_owned(), now);
        true
    }

    /// Where a request for `name` (with the request's `ns` parameter) goes, if it is
    /// cached: by `ns`, when a rule declares that namespace (an `ns` none declares is
    /// ignored, as the spec allows); else by the longest prefix that `name` lies below.
    pub fn route(&self, name: &RepositoryName, ns: Option<&str>) -> Option<Routed> {
        let by_namespace = ns.and_then(|ns| {
            self.rules
                .iter()
                .position(|rule| rule.namespace.as_deref() == Some(ns))
                .map(|at| (at, name.as_str(), Some(ns.to_owned())))
        });
        let (at, upstream_name, namespace) = by_namespace.or_else(|| {
            self.rules
                .iter()
                .enumerate()
                .filter_map(|(at, rule)| {
                    if rule.prefix.is_empty() {
                        return Some((at, name.as_str(), None));
                    }
                    let rest = name.as_str().strip_prefix(rule.prefix.as_str())?;
                    let rest = rest.strip_prefix('/')?;
                    Some((at, rest, None))
                })
                .max_by_key(|(at, _, _)| self.rules[*at].prefix.len())
        })?;
        let rule = &self.rules[at];
        let remote = if rule.adds_library() && !upstream_name.contains('/') {
            format!("library/{upstream_name}")
        } else {
            upstream_name.to_owned()
        };
        let local = match rule.prefix.as_str() {
            "" => remote.parse().ok()?,
            prefix => format!("{prefix}/{remote}").parse().ok()?,
        };
        Some(Routed {
            rule: at,
            local,
            remote,
            namespace,
        })
    }

    /// How many of the rules' upstream URLs rest at `now`, and how many there are.
    pub fn resting_urls(&self, now: u64) -> (usize, usize) {
        let urls: std::collections::BTreeSet<&str> = self
            .rules
            .iter()
            .flat_map(|rule| rule.urls.iter().map(String::as_str))
            .collect();
        let resting = urls.iter().filter(|url| self.is_resting(url, now)).count();
        (resting, urls.len())
    }

    /// Whether `url` is resting at `now` (it failed, and said or was given how long to wait).
    pub fn is_resting(&self, url: &str, now: u64) -> bool {
        let Ok(resting) = self.resting.lock() else {
            return false;
        };
        resting.get(url).is_some_and(|until| *until > now)
    }

    /// Leaves `url` alone until `until`.
    pub fn rest(&self, url: &str, until: u64) {
        if let Ok(mut resting) = self.resting.lock() {
            resting.insert(url.to_owned(), until);
        }
    }

    /// Counts a request to `url` as open if fewer than `limit` are; whether it did.
    pub fn enter(&self, url: &str, limit: usize) -> bool {
        let Ok(mut open) = self.open.lock() else {
            return true;
        };
        let count = open.entry(url.to_owned()).or_default();
        if *count >= limit {
            return false;
        }
        *count += 1;
        true
    }

    /// A request to `url` that [`Upstreams::enter`] counted has ended.
    pub fn leave(&self, url: &str) {
        if let Ok(mut open) = self.open.lock()
            && let Some(count) = open.get_mut(url)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(url);
            }
        }
    }

    /// `url` answered: it is well again.
    pub fn recovered(&self, url: &str) {
        if let Ok(mut resting) = self.resting.lock()
            && resting.remove(url).is_some()
        {
            resting.shrink_to_fit();
        }
    }
}

/// A request to an upstream registry.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// GET or HEAD.
    pub method: Method,
    /// The whole URL.
    pub url: String,
    /// Headers to send (`Accept`, `Authorization`, `Range`).
    pub headers: Vec<(String, String)>,
}

/// An upstream's answer: the host's client follows redirects (Docker Hub sends blobs from
/// elsewhere) and bounds the time to the first byte and between chunks.
pub struct UpstreamResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers as received.
    pub headers: Vec<(String, String)>,
    /// The body, as it arrives.
    pub body: RequestBody,
}

impl std::fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl UpstreamResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The HTTP client a host gives the registry for its upstreams (`reqwest` natively, `fetch`
/// in WebAssembly, a callback in C).
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait UpstreamClient: crate::storage::MaybeSend + crate::storage::MaybeSync {
    /// Sends `request`; an error is a failure to get an answer at all (no connection, a
    /// timeout), in words.
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, String>;
}

/// A `WWW-Authenticate: Bearer realm=..,service=..,scope=..` challenge's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    /// Where to ask for a token.
    pub realm: String,
    /// The service the token is for.
    pub service: Option<String>,
    /// The scope asked for, when the challenge names one.
    pub scope: Option<String>,
}

/// Parses a Bearer challenge (other schemes: `None`).
pub fn bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_at(after.find(',').unwrap_or(after.len())),
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            "scope" => scope = Some(value.to_owned()),
            _ => {}
        }
        rest = after.trim_start_matches([',', ' ']);
    }
    Some(BearerChallenge {
        realm: realm?,
        service,
        scope,
    })
}

/// The token and its lifetime (seconds; 60 when not said, as the token spec's default)
/// from a token service's JSON answer.
pub fn token_answer(body: &[u8]) -> Option<(String, u64)> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = answer
        .get("token")
        .or_else(|| answer.get("access_token"))?
        .as_str()?
        .to_owned();
    let lifetime = answer
        .get("expires_in")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(60);
    Some((token, lifetime))
}

/// Seconds to wait from a `Retry-After` header at `now` (seconds since the epoch): seconds,
/// or an HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`; a date past is no wait).
pub fn retry_after(value: Option<&str>, now: u64) -> Option<u64> {
    let value = value?.trim();
    if let Ok(seconds) = value.parse() {
        return Some(seconds);
    }
    http_date(value).map(|at| at.saturating_sub(now))
}

/// Seconds since the epoch of an IMF-fixdate (the form RFC 9110 says senders use).
fn http_date(text: &str) -> Option<u64> {
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = fields.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|name| name == month)? as u64 + 1;
    let (day, year): (u64, u64) = (day.parse().ok()?, year.parse().ok()?);
    let mut clock = time.split(':').map(|part| part.parse::<u64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if !(1970..=9999).contains(&year) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Days since 1970-01-01 of a civil date (the era arithmetic of Howard Hinnant's
    // `days_from_civil`, with March as the first month so leap days end a year).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let year_of_era = y % 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = (era * 146_097 + day_of_era).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second.min(60))
}

#[cfg(test)]
mod tests;
