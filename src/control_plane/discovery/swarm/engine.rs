//! A minimal HTTP/1.1 client for the Docker Engine API and for other gateways'
//! admin APIs: one connection per request over a unix socket or TCP, a time
//! bound on every request, a size bound on every answer, and the `/events`
//! stream read line by line. bollard 0.18 has no tasks or nodes calls and its
//! task model lacks `NetworksAttachments`, so Swarm discovery talks HTTP itself.

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tokio_util::either::Either;

use super::model::ApiError;

/// Largest answer read (a swarm with thousands of tasks stays far below).
const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// Longest event line kept while waiting for its newline.
const MAX_EVENT_LINE: usize = 64 * 1024;

/// Where an HTTP server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port` over TCP.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "http://{addr}"),
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// `DOCKER_HOST` (or the option) has a scheme we cannot use.
    #[error(
        "unsupported Docker host {0:?}; use unix:///path, tcp://host:port or http://host:port"
    )]
    Scheme(String),
    #[error("{endpoint}: cannot connect: {error}")]
    Connect {
        endpoint: String,
        error: std::io::Error,
    },
    #[error("{endpoint}{path}: {error}")]
    Http {
        endpoint: String,
        path: String,
        error: hyper::Error,
    },
    #[error("{endpoint}{path}: no answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        endpoint: String,
        path: String,
        timeout: Duration,
    },
    /// A non-2xx answer, with the server's `message` when it sent one.
    #[error("{endpoint}{path}: {status}: {message}")]
    Status {
        endpoint: String,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("{endpoint}{path}: unreadable answer: {error}")]
    Decode {
        endpoint: String,
        path: String,
        error: String,
    },
}

impl RequestError {
    /// The HTTP status, for answers that had one.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match self {
            RequestError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl Endpoint {
    /// `host`, else `$DOCKER_HOST`, else the default socket.
    pub(crate) fn docker(host: Option<&str>) -> Result<Endpoint, RequestError> {
        let host = host
            .map(str::to_owned)
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        if let Some(path) = host.strip_prefix("unix://") {
            Ok(Endpoint::Unix(PathBuf::from(path)))
        } else if let Some(addr) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            Ok(Endpoint::Tcp(addr.trim_end_matches('/').to_owned()))
        } else {
            Err(RequestError::Scheme(host))
        }
    }

    async fn send(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<hyper::Response<Incoming>, RequestError> {
        let connect_err = |error| RequestError::Connect {
            endpoint: self.to_string(),
            error,
        };
        let stream = match self {
            Endpoint::Unix(p) => Either::Left(UnixStream::connect(p).await.map_err(connect_err)?),
            Endpoint::Tcp(a) => Either::Right(TcpStream::connect(a).await.map_err(connect_err)?),
        };
        let http_err = |error| RequestError::Http {
            endpoint: self.to_string(),
            path: path.to_owned(),
            error,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        tokio::spawn(async move {
            // The connection ends with the answer (or the caller dropping it).
            if let Err(error) = conn.await {
                tracing::trace!(%error, "discovery HTTP connection ended");
            }
        });
        let host = match self {
            Endpoint::Unix(_) => "localhost",
            Endpoint::Tcp(a) => a.as_str(),
        };
        let mut req = Request::get(path).header(http::header::HOST, host);
        if let Some(token) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| RequestError::Decode {
                endpoint: self.to_string(),
                path: path.to_owned(),
                error: e.to_string(),
            })?;
        sender.send_request(req).await.map_err(http_err)
    }

    /// `GET path`, the whole 2xx answer within `timeout`.
    pub(crate) async fn get(
        &self,
        path: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        let work = async {
            let resp = self.send(path, token).await?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| RequestError::Decode {
                    endpoint: self.to_string(),
                    path: path.to_owned(),
                    error: e.to_string(),
                })?
                .to_bytes();
            if status.is_success() {
                return Ok(body);
            }
            let message = serde_json::from_slice::<ApiError>(&body)
                .map(|e| e.message)
                .ok()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| {
                    String::from_utf8_lossy(&body)
                        .trim()
                        .chars()
                        .take(300)
                        .collect()
                });
            Err(RequestError::Status {
                endpoint: self.to_string(),
                path: path.to_owned(),
                status,
                message,
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(RequestError::Timeout {
                    endpoint: self.to_string(),
                    path: path.to_owned(),
                    timeout,
                })
            })
    }

    /// `GET path` as JSON.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<T, RequestError> {
        let body = self.get(path, token, timeout).await?;
        serde_json::from_slice(&body).map_err(|e| RequestError::Decode {
            endpoint: self.to_string(),
            path: path.to_owned(),
            error: e.to_string(),
        })
    }

    /// Opens the event stream at `path` (connecting within `timeout`).
    pub(crate) async fn events(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<Events, RequestError> {
        let resp = tokio::time::timeout(timeout, self.send(path, None))
            .await
            .unwrap_or_else(|_| {
                Err(RequestError::Timeout {
                    endpoint: self.to_string(),
                    path: path.to_owned(),
                    timeout,
                })
            })?;
        if !resp.status().is_success() {
            return Err(RequestError::Status {
                endpoint: self.to_string(),
                path: path.to_owned(),
                status: resp.status(),
                message: "event stream refused".to_owned(),
            });
        }
        Ok(Events {
            body: resp.into_body(),
            buf: BytesMut::new(),
        })
    }
}

/// An open `/events` stream; each call to [`Events::next`] yields one line.
#[derive(Debug)]
pub(crate) struct Events {
    body: Incoming,
    buf: BytesMut,
}

impl Events {
    /// The next event line; `None` when the stream ended or failed.
    pub(crate) async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(at) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(at + 1).freeze();
                return Some(line.slice(..at));
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
                if self.buf.len() > MAX_EVENT_LINE {
                    // Not an event stream we understand; a re-list is still due.
                    self.buf.clear();
                    return Some(Bytes::new());
                }
            }
        }
    }
}
