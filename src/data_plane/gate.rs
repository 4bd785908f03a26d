//! Route gates: a paused route's waiting room and a route's maintenance answer.
//!
//! Both are admin overrides (`ctl pause`, `ctl maintenance`) the controller lays
//! into the spec; the snapshot gives each such route a [`Gate`]. A request reads it
//! only when the snapshot has any gate at all (one `bool` on the normal path).
//!
//! *Pause* has the semantics of `hold` (see `health::hold`), per route: a request
//! waits on the route's [`PauseShared`] until a snapshot without the pause is
//! published (the controller wakes every gate of the snapshot it replaces), then
//! goes on with that snapshot. At most `max_queued` requests wait (one more is
//! answered 503 `pause_queue_full`), each at most `max` from its arrival (then 504
//! `paused_timeout`). Requests already past the gate (in flight, streams, tunnels)
//! are not touched. The `PauseShared` of a route that stays paused is carried from
//! one snapshot to the next, so the queue bound holds across reloads.
//!
//! *Maintenance* answers every request of the route 503 with `Retry-After`, as
//! HTML when the client prefers it (`Accept` names `text/html`, as browsers do)
//! and as JSON otherwise. The page is the operator's (`[maintenance]` in the
//! config) or the built-in [`DEFAULT_TEMPLATE`], with `{{message}}`, `{{route}}`
//! (both HTML-escaped) and `{{retry_after}}`. A gRPC call (`application/grpc*`
//! over HTTP/2) reads only `grpc-status`, so it is answered as the gateway's
//! other errors are (see `proxy::grpc`): trailers-only, 14 UNAVAILABLE, with a
//! `grpc-message` naming the maintenance and its message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use tokio::sync::Notify;

use crate::control_plane::config::spec::{MaintenanceSpec, PauseSpec};
use crate::data_plane::proxy::body::ResponseBody;
use crate::data_plane::proxy::error::ERROR_HEADER;
use crate::data_plane::proxy::grpc;

/// The built-in maintenance page.
pub const DEFAULT_TEMPLATE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
<title>Down for maintenance</title></head>\n<body><h1>Down for maintenance</h1>\n\
<p>{{message}}</p>\n<p>Please try again in {{retry_after}} seconds.</p></body></html>\n";

/// The message when `ctl maintenance` gave none.
pub const DEFAULT_MESSAGE: &str = "This service is down for maintenance.";

/// What a route's requests meet before routing goes on.
#[derive(Debug)]
pub enum Gate {
    /// Wait until the pause ends.
    Pause(Pause),
    /// Answer 503 at once.
    Maintenance(Arc<MaintenancePage>),
}

/// A paused route: its limits and its waiting room.
#[derive(Debug)]
pub struct Pause {
    pub spec: PauseSpec,
    pub shared: Arc<PauseShared>,
}

/// The waiting room of a paused route, kept across snapshots while the pause lasts.
#[derive(Debug, Default)]
pub struct PauseShared {
    wake: Notify,
    queued: AtomicUsize,
}

impl PauseShared {
    /// Wakes every waiting request to look at the latest snapshot.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Joins the queue unless `max` requests already wait.
    pub fn enter(self: &Arc<Self>, max: usize) -> Option<PauseSlot> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| PauseSlot(Arc::clone(self)))
    }

    /// A future that completes at the next [`wake`](Self::wake), registered now
    /// (so a wake between registering and awaiting is not lost).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
}

/// A request's place in a paused route's queue, left on drop.
#[derive(Debug)]
pub struct PauseSlot(Arc<PauseShared>);

impl PauseSlot {
    /// Whether this slot is in `shared`'s queue.
    pub fn is_in(&self, shared: &Arc<PauseShared>) -> bool {
        Arc::ptr_eq(&self.0, shared)
    }
}

impl Drop for PauseSlot {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A route's maintenance answer, rendered once per snapshot.
#[derive(Debug)]
pub struct MaintenancePage {
    html: Bytes,
    json: Bytes,
    retry_after: HeaderValue,
    /// `grpc-message` of the answer to a gRPC call (percent-encoded).
    grpc_message: HeaderValue,
}

impl MaintenancePage {
    /// Renders `template` for `route` with `spec`'s message.
    pub fn new(route: &str, spec: &MaintenanceSpec, template: &str) -> Self {
        let message = spec.message.as_deref().unwrap_or(DEFAULT_MESSAGE);
        let retry = spec.retry_after.to_string();
        let html = template
            .replace("{{message}}", &escape_html(message))
            .replace("{{route}}", &escape_html(route))
            .replace("{{retry_after}}", &retry);
        let json = serde_json::json!({
            "error": "maintenance",
            "route": route,
            "message": message,
            "retry_after": spec.retry_after,
        });
        let mut json = json.to_string();
        json.push('\n');
        let grpc_message = grpc::percent_encode(&format!(
            "sluicegate-error={MAINTENANCE_CAUSE}: route {route} is down for maintenance: {message} (retry after {retry} s; HTTP 503)"
        ));
        MaintenancePage {
            html: Bytes::from(html),
            json: Bytes::from(json),
            retry_after: HeaderValue::from(spec.retry_after),
            // Percent-encoded text is visible ASCII, always a valid value.
            grpc_message: HeaderValue::from_str(&grpc_message)
                .unwrap_or_else(|_| HeaderValue::from_static("sluicegate-error=maintenance")),
        }
    }

    /// The answer to a gRPC call: trailers-only, `grpc-status` 14 UNAVAILABLE
    /// (what the gRPC HTTP mapping gives a 503), `grpc-message` naming the
    /// maintenance, `Retry-After` and `sluicegate-error` as on the HTTP answer.
    pub fn grpc_answer(&self) -> Response<ResponseBody> {
        let mut resp = Response::new(ResponseBody::empty());
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            grpc::GRPC_STATUS,
            HeaderValue::from_static(grpc::Code::Unavailable.value()),
        );
        headers.insert(grpc::GRPC_MESSAGE, self.grpc_message.clone());
        headers.insert(header::RETRY_AFTER, self.retry_after.clone());
        headers.insert(ERROR_HEADER, HeaderValue::from_static(MAINTENANCE_CAUSE));
        resp
    }

    /// The answer for a request with these headers: HTML when `Accept` prefers
    /// `text/html`, JSON otherwise.
    pub fn answer(&self, request: &HeaderMap) -> Response<ResponseBody> {
        let (body, kind) = if wants_html(request) {
            (self.html.clone(), "text/html; charset=utf-8")
        } else {
            (self.json.clone(), "application/json")
        };
        let mut resp = Response::new(ResponseBody::full(body));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        headers.insert(header::RETRY_AFTER, self.retry_after.clone());
        headers.insert(ERROR_HEADER, HeaderValue::from_static(MAINTENANCE_CAUSE));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// The `sluicegate-error` token of a maintenance answer.
pub const MAINTENANCE_CAUSE: &str = "maintenance";

/// Whether `Accept` asks for HTML before JSON: browsers send `text/html` first;
/// API clients send `application/json`, `*/*` or nothing.
fn wants_html(headers: &HeaderMap) -> bool {
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let media = item.split(';').next().unwrap_or("").trim();
            if media.eq_ignore_ascii_case("text/html")
                || media.eq_ignore_ascii_case("application/xhtml+xml")
            {
                return true;
            }
            if media.eq_ignore_ascii_case("application/json") {
                return false;
            }
        }
    }
    false
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> MaintenancePage {
        let spec = MaintenanceSpec {
            message: Some("<b>back soon</b>".into()),
            retry_after: 90,
        };
        MaintenancePage::new("web", &spec, DEFAULT_TEMPLATE)
    }

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn browsers_get_html_and_api_clients_json() {
        let p = page();
        let html = p.answer(&accept("text/html,application/xhtml+xml,*/*;q=0.8"));
        assert_eq!(html.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(html.headers()[header::RETRY_AFTER], "90");
        assert!(html.headers()[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|v| v.starts_with("text/html")));
        assert!(std::str::from_utf8(&p.html)
            .is_ok_and(|s| s.contains("&lt;b&gt;back soon&lt;/b&gt;") && s.contains("90 seconds")));
        for a in ["application/json", "*/*"] {
            let json = p.answer(&accept(a));
            assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(json.headers()[ERROR_HEADER], "maintenance");
        }
        let none = p.answer(&HeaderMap::new());
        assert_eq!(none.headers()[header::CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_slice(&p.json).unwrap_or_default();
        assert_eq!(v["message"], "<b>back soon</b>");
        assert_eq!(v["retry_after"], 90);
    }

    #[test]
    fn grpc_calls_get_unavailable_naming_the_maintenance() {
        let resp = page().grpc_answer();
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(h[ERROR_HEADER], "maintenance");
        assert_eq!(h[header::RETRY_AFTER], "90");
        let message = h["grpc-message"].to_str().unwrap_or_default();
        assert!(
            message.starts_with(
                "sluicegate-error=maintenance: route web is down for maintenance: <b>back soon</b>"
            ),
            "{message}"
        );
    }

    #[test]
    fn an_operator_template_is_filled_and_escaped() {
        let spec = MaintenanceSpec {
            message: Some("a & b".into()),
            retry_after: 30,
        };
        let p = MaintenancePage::new(
            "<web>",
            &spec,
            "<h1>{{route}}</h1>{{message}} in {{retry_after}}",
        );
        assert_eq!(&p.html[..], b"<h1>&lt;web&gt;</h1>a &amp; b in 30");
    }

    #[test]
    fn the_queue_is_bounded_and_slots_leave_on_drop() {
        let shared = Arc::new(PauseShared::default());
        let a = shared.enter(2);
        let b = shared.enter(2);
        assert!(a.is_some() && b.is_some());
        assert!(shared.enter(2).is_none());
        drop(a);
        assert_eq!(shared.queued(), 1);
        assert!(shared.enter(2).is_some());
    }
}
