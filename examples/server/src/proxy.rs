//! Pull-through caching in `berth serve`: the upstream rules (`--upstream PREFIX=URL`, or a
//! file of `[[upstream]]` tables) and the HTTP client the registry fetches through.

use std::path::Path;
use std::time::Duration;

use berth::proxy::{UpstreamClient, UpstreamRequest, UpstreamResponse, UpstreamRule, Upstreams};

/// The upstream rules: those of the file (TOML `[[upstream]]` tables, a `*.json` file, or
/// JSON text), then the flags' `PREFIX=URL` pairs.
pub(crate) fn upstreams(file: Option<&Path>, pairs: &[String]) -> Result<Upstreams, String> {
    let from_file =
        crate::lifecycle::read_tables(file, "upstream", Upstreams::from_json, Upstreams::new)?;
    let mut rules = from_file.rules().to_vec();
    for pair in pairs {
        let (prefix, url) = pair
            .split_once('=')
            .ok_or_else(|| format!("--upstream {pair:?}: expected PREFIX=URL"))?;
        rules.push(UpstreamRule::new(prefix, url));
    }
    Upstreams::new(rules)
}

/// Fetches from upstream registries with reqwest: redirects followed (credentials are not
/// sent to another host), a bounded wait to connect and between two reads.
pub(crate) struct UpstreamOverHttp {
    client: reqwest::Client,
}

impl UpstreamOverHttp {
    pub(crate) fn new() -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Self { client })
    }
}

#[async_trait::async_trait]
impl UpstreamClient for UpstreamOverHttp {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, String> {
        let method = match request.method {
            berth::Method::Head => reqwest::Method::HEAD,
            _ => reqwest::Method::GET,
        };
        let mut builder = self.client.request(method, &request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let response = builder.send().await.map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        let body = futures_util::stream::unfold(Some(response), |response| async move {
            let mut response = response?;
            match response.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(response))),
                Ok(None) => None,
                Err(error) => Some((Err(describe(&error).into()), None)),
            }
        });
        Ok(UpstreamResponse {
            status,
            headers,
            body: Box::pin(body),
        })
    }
}

/// reqwest's error with its causes (its own message is often only "error sending request").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_from_a_file_and_the_flags() {
        let dir = std::env::temp_dir().join(format!("berth-upstreams-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let toml = dir.join("upstreams.toml");
        std::fs::write(
            &toml,
            "[[upstream]]\nprefix = \"hub\"\nnamespace = \"docker.io\"\n\
             urls = [\"https://registry-1.docker.io\"]\nrevalidate = \"1m\"\n",
        )
        .expect("written");
        let pairs = ["ghcr=https://ghcr.io".to_owned()];
        let upstreams = upstreams(Some(&toml), &pairs).expect("valid rules");
        assert_eq!(upstreams.rules().len(), 2);
        assert_eq!(upstreams.rule(0).revalidate, 60);
        assert_eq!(upstreams.rule(1).prefix, "ghcr");
        std::fs::write(&toml, "[[upstreams]]\nprefix = \"hub\"\n").expect("written");
        assert!(upstreams_err(&toml).contains("[[upstream]]"));
        assert!(super::upstreams(None, &["no-url".to_owned()]).is_err());
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    fn upstreams_err(path: &Path) -> String {
        upstreams(Some(path), &[]).expect_err("refused")
    }
}
