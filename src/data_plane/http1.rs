//! The gateway's own HTTP/1.1, beside hyper's, for the common request: one head,
//! no body. Everything here can be turned off with `[listen] http1_fast_path =
//! false`, which sends every request through hyper's server and client instead.
//!
//! **Which requests it serves.** On the client side ([`server`]), a plain (non-TLS)
//! HTTP/1.1 connection starts on this loop. It serves requests without a body,
//! upgrade, `Expect` or `CONNECT`, whose head it parses within the listener's
//! limits. At the first request it does not serve (a body, an upgrade, `Expect`,
//! HTTP/1.0, h2c, a head hyper would refuse or answer with an error of its own) it
//! hands the connection, with every byte read so far (`prefixed`), to hyper for
//! the rest of its life: a connection never goes back from hyper to this loop. TLS
//! connections are hyper's from the start. On the backend side ([`client`]), a
//! request with neither body nor upgrade to a plain-TCP backend goes on a
//! connection the request's own task drives; requests with a body, upgrades and
//! TLS backends go through hyper's client.
//!
//! **When a connection is reused.** A client connection serves the next request
//! unless the client sent `Connection: close`, the listener is draining, or the
//! answer could not be framed for keep-alive; pipelined bytes are kept as the next
//! request. A backend connection goes back to its pool only when its response
//! ended exactly where its framing said, the response was HTTP/1.1 without
//! `Connection: close`, and the backend sent nothing beyond it; anything else
//! closes it. A pooled backend connection older than the pool's age limit, or one
//! the backend closed while idle, is dropped when taken (and by a periodic sweep).
//!
//! **How framing is decided.** An answer to a client is framed by
//! `Content-Length` when its length is known, else chunked; `HEAD`, 204 and 304
//! carry no body. A backend's response body (RFC 9112 §6.3): none for `HEAD`, 1xx,
//! 204 and 304; by chunked coding when `Transfer-Encoding` ends in `chunked` (then
//! any `Content-Length` is ignored and the connection not reused); until the backend
//! closes for any other transfer coding or when no length is given; else by
//! `Content-Length`. Conflicting or invalid lengths and a transfer coding on an
//! HTTP/1.0 response are errors. Trailers of a chunked body are read and dropped.
//!
//! Both loops share `wire` (head lines, list fields, read buffers) and
//! `deadline` (one long-lived timer per connection); `fields` writes a backend's
//! raw response fields for the client. The parsers are public
//! ([`server::parse_request_head`], [`client::parse_response_head`],
//! [`client::decode_chunked`]) so fuzz targets and property tests can drive them
//! directly; `tests/it/props/upstream.rs` holds the client to hyper's on mutated
//! responses, `tests/it/props/http.rs` the server loop to hyper's server.
//!
//! This module imports nothing from `proxy` or `upstream`: both build on it.

pub mod client;
pub(crate) mod deadline;
pub(crate) mod fields;
pub(crate) mod prefixed;
pub mod server;
pub(crate) mod wire;
