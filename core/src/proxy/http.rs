//! The native upstream client: reqwest, on the host's tokio runtime (`berth serve` and the C
//! library use it).

use std::time::Duration;

use super::{UpstreamClient, UpstreamRequest, UpstreamResponse};

/// Fetches from upstream registries with reqwest: redirects followed (credentials are not
/// sent to another host), a bounded wait to connect and between two reads.
#[derive(Debug)]
pub struct HttpUpstream {
    client: reqwest::Client,
}

impl HttpUpstream {
    /// A client that gives up on an upstream silent for 30 seconds; fails only when the TLS
    /// setup does.
    pub fn new() -> Result<Self, String> {
        Self::with_timeout(Duration::from_secs(30))
    }

    /// A client that gives up on an upstream silent for `silence` (to connect: at most 5
    /// seconds; between two reads of an answer): a stalled fill is then cut off, and the
    /// next request resumes it.
    pub fn with_timeout(silence: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(silence.min(Duration::from_secs(5)))
            .read_timeout(silence)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Self { client })
    }
}

#[async_trait::async_trait]
impl UpstreamClient for HttpUpstream {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, String> {
        let method = match request.method {
            crate::Method::Head => reqwest::Method::HEAD,
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
