//! Bearer-token check of the admin API (`Authorization: Bearer …`, RFC 6750).
//!
//! The presented token is compared with [`constant_time_eq`], whose running time
//! does not depend on where the first differing byte is, so the token cannot be
//! guessed byte by byte from response times. Failures answer 401 with a
//! `WWW-Authenticate` challenge and the usual JSON error.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::error_response;
use super::AdminState;

/// The configured admin token.
#[derive(Clone)]
pub(crate) struct Token(Arc<[u8]>);

impl Token {
    /// Wraps the token's text.
    pub(crate) fn new(text: &str) -> Token {
        Token(Arc::from(text.as_bytes()))
    }

    /// Whether `presented` is this token, in constant time.
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(presented, &self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Byte-wise equality whose time depends only on the inputs' lengths, never on
/// their content: every byte position up to the longer length is visited and the
/// differences are OR-ed together, with no early exit.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (diff, _visited) = fold_difference(a, b);
    std::hint::black_box(diff) == 0
}

/// The OR of all byte differences (and of the lengths), and how many positions
/// were visited (always the longer length: there is no early exit).
fn fold_difference(a: &[u8], b: &[u8]) -> (usize, usize) {
    let mut diff = a.len() ^ b.len();
    let mut visited = 0;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
        visited += 1;
    }
    (diff, visited)
}

/// Middleware: lets the request through only with the right bearer token (or when
/// no token is configured).
pub(super) async fn require_token(
    State(state): State<AdminState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let message = match presented {
        None => "missing bearer token: send `Authorization: Bearer <token>`",
        Some(p) if token.matches(p) => return next.run(req).await,
        Some(_) => "wrong bearer token",
    };
    let mut resp =
        error_response(StatusCode::UNAUTHORIZED, message, "authorization").into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sluicegate\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_plain_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret2", b"secret"));
        assert!(!constant_time_eq(b"", b"x"));
        // A prefix of zero bytes must not pass as the shorter string.
        assert!(!constant_time_eq(b"ab\0", b"ab"));
    }

    #[test]
    fn compare_visits_every_byte_wherever_the_difference_is() {
        // The timing property, checked structurally (a stopwatch would be flaky in
        // CI): a mismatch at the first byte costs as many steps as one at the last.
        let a = vec![7u8; 4096];
        let mut first = a.clone();
        first[0] = 0;
        let mut last = a.clone();
        last[4095] = 0;
        for other in [&first, &last, &a] {
            assert_eq!(fold_difference(&a, other).1, 4096);
        }
        assert_eq!(fold_difference(b"short", &a).1, 4096);
        assert!(!constant_time_eq(&a, &first) && !constant_time_eq(&a, &last));
    }

    #[test]
    fn token_debug_is_redacted() {
        assert_eq!(format!("{:?}", Token::new("hunter2")), "Token(<redacted>)");
        assert!(Token::new("hunter2").matches(b"hunter2"));
    }
}
