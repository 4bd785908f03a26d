//! A minimal admin API client on hyper (already a dependency; no extra HTTP stack).
//!
//! One HTTP/1.1 connection per request, bounded by a timeout; `http://` only (the
//! admin API is meant for loopback or a private network). Non-2xx answers become
//! [`CtlError::Api`] with the server's `{error, path}`.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

/// Errors of `sluicegate ctl`, `plan` and `health`.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0:?} is not an admin URL; write e.g. http://127.0.0.1:9901")]
    BadUrl(String),
    #[error("cannot reach the admin API at {url}: {error} (is the gateway running with an [admin] table?)")]
    Connect { url: String, error: std::io::Error },
    #[error("the admin API at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("talking to the admin API at {url} failed: {error}")]
    Http { url: String, error: hyper::Error },
    #[error("the admin API answered {status}: {}{error}{hint}", if .path.is_empty() { String::new() } else { format!("{}: ", .path) })]
    Api {
        status: StatusCode,
        error: String,
        path: String,
        hint: &'static str,
    },
    #[error("unexpected answer from the admin API: {0}")]
    BadAnswer(String),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] crate::control_plane::config::LoadError),
}

/// Where the admin API is and how to authenticate.
#[derive(Clone)]
pub struct AdminClient {
    url: String,
    authority: String,
    base_path: String,
    token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never printed, only whether there is one.
        f.debug_struct("AdminClient")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// `url` like `http://127.0.0.1:9901` (a path prefix is kept).
    pub fn new(
        url: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<AdminClient, CtlError> {
        let bad = || CtlError::BadUrl(url.to_owned());
        let with_scheme = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = with_scheme.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(AdminClient {
            url: with_scheme.trim_end_matches('/').to_owned(),
            authority: format!("{}:{port}", authority.host()),
            base_path: uri.path().trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
            timeout,
        })
    }

    /// One HTTP/1.1 connection to the admin listener; its driver runs on its own task.
    async fn connect(
        &self,
        url: &str,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, CtlError> {
        let stream =
            TcpStream::connect(&self.authority)
                .await
                .map_err(|error| CtlError::Connect {
                    url: self.url.clone(),
                    error,
                })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| CtlError::Http {
                url: url.to_owned(),
                error,
            })?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%err, "admin connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A request to `path` under the admin base path, with Host and the token.
    fn request(&self, method: Method, path: &str) -> http::request::Builder {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_path))
            .header(header::HOST, &self.authority);
        match &self.token {
            Some(token) => req.header(header::AUTHORIZATION, format!("Bearer {token}")),
            None => req,
        }
    }

    /// Sends one request; returns the status and whole body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(StatusCode, Bytes), CtlError> {
        let url = format!("{}{path}", self.url);
        let exchange = async {
            let http = |error| CtlError::Http {
                url: url.clone(),
                error,
            };
            let mut sender = self.connect(&url).await?;
            // The admin API takes writes only as JSON (it refuses what a web page
            // could send), bodiless ones included.
            let write = !matches!(method, Method::GET | Method::HEAD);
            let mut req = self.request(method, path);
            let body = match body {
                Some((content_type, bytes)) => {
                    req = req.header(header::CONTENT_TYPE, content_type);
                    Full::new(Bytes::from(bytes))
                }
                None => {
                    if write {
                        req = req.header(header::CONTENT_TYPE, "application/json");
                    }
                    Full::new(Bytes::new())
                }
            };
            let req = req
                .body(body)
                .map_err(|e| CtlError::BadUrl(format!("{url} ({e})")))?;
            let resp = sender.send_request(req).await.map_err(http)?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await.map_err(http)?.to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| CtlError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })?
    }

    /// Opens `GET /api/v1/events` (resuming after `last` if given) within the
    /// timeout; the body is the live stream, read for as long as the caller wants.
    pub async fn events(&self, last: Option<u64>) -> Result<hyper::body::Incoming, CtlError> {
        let url = format!("{}/api/v1/events", self.url);
        let open = async {
            let http = |error| CtlError::Http {
                url: url.clone(),
                error,
            };
            let mut sender = self.connect(&url).await?;
            let mut req = self.request(Method::GET, "/api/v1/events");
            if let Some(last) = last {
                req = req.header("last-event-id", last.to_string());
            }
            let req = req
                .body(Full::new(Bytes::new()))
                .map_err(|e| CtlError::BadUrl(format!("{url} ({e})")))?;
            let resp = sender.send_request(req).await.map_err(http)?;
            if !resp.status().is_success() {
                let status = resp.status();
                let bytes = resp.into_body().collect().await.map_err(http)?.to_bytes();
                return Err(api_error(status, &bytes));
            }
            Ok(resp.into_body())
        };
        tokio::time::timeout(self.timeout, open)
            .await
            .map_err(|_| CtlError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })?
    }

    /// Sends a request and decodes a 2xx JSON answer.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<T, CtlError> {
        let (status, bytes) = self.send(method, path, body).await?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| CtlError::BadAnswer(e.to_string()))
    }
}

/// The server's `{error, path}` as a [`CtlError::Api`].
fn api_error(status: StatusCode, body: &[u8]) -> CtlError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
        #[serde(default)]
        path: String,
    }
    let (error, path) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.error, e.path),
        Err(_) => (
            String::from_utf8_lossy(body).trim().to_owned(),
            String::new(),
        ),
    };
    let hint = if status == StatusCode::UNAUTHORIZED {
        " (pass --token or set SLUICEGATE_ADMIN_TOKEN)"
    } else {
        ""
    };
    CtlError::Api {
        status,
        error,
        path,
        hint,
    }
}

/// Percent-encodes one path segment (IPv6 brackets, spaces, slashes…).
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls() {
        let c = AdminClient::new("http://127.0.0.1:9901/", None, Duration::from_secs(1)).unwrap();
        assert_eq!(
            (c.authority.as_str(), c.base_path.as_str()),
            ("127.0.0.1:9901", "")
        );
        let c = AdminClient::new(
            "localhost:9901/gw",
            Some(String::new()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            (c.authority.as_str(), c.base_path.as_str()),
            ("localhost:9901", "/gw")
        );
        assert!(c.token.is_none());
        assert!(AdminClient::new("https://x:1", None, Duration::from_secs(1)).is_err());
        assert!(AdminClient::new("http://", None, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = Some("s3cret".to_owned());
        let c = AdminClient::new("http://127.0.0.1:9901", token, Duration::from_secs(1)).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(segment("[::1]:80"), "%5B::1%5D:80");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
