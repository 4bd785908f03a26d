//! The request path: route → split → balance → forward → stream back.
//!
//! [`Proxy::handle`] loads the current snapshot once, then forwards in three steps:
//! *prepare* (route, split, head rewriting), *attempt* (pick a backend, one
//! exchange on a pooled keep-alive connection, retries, hold, replay) and
//! *respond* (the backend's answer into the client's). An exchange goes on one
//! kind of connection (`ConnKind`: the gateway's own HTTP/1 client or hyper's) and
//! ends in an answer or a `ProxyError` that says whether the request was sent,
//! whatever the kind, so the retry rules are written once. Bodies
//! stream both ways; an `Upgrade` becomes a byte tunnel. Failures become the gateway's
//! own short answers (see `error`). Retries go to a different backend: always when
//! the request never left, otherwise only for idempotent requests without a body.
//! Every attempt's outcome is reported to the pool (passive ejection and its traffic
//! counters, `pool_stats`: a few relaxed atomic adds), and a pool with
//! `hold` parks a request that finds no usable backend instead of failing it.
//!
//! Each request leaves a `trail`: its metrics (pre-resolved handles, atomic adds)
//! and, with `[log] access` on, its access-log line.
//!
//! No lock is taken on the way of a normal request: the snapshot is an `ArcSwap`
//! load, backend state (health included) is atomics, and the connection pool is a
//! lock-free queue. Only the rare paths touch tokio's short internal locks: a held
//! request registering on its pool's `Notify`, and an ejection publishing its event.
//! Routes with `sticky.learn_header` are the exception by configuration: they look up
//! and pin sessions in a sharded table (one shard mutex, a map operation; see
//! `sessions`).

pub(crate) mod body;
pub(crate) mod error;
pub mod framing;
pub mod grpc;
pub mod headers;
mod trail;
mod tunnel;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use http::uri::PathAndQuery;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::control_plane::config::spec::PoolName;
use crate::control_plane::config::spec::{Timeouts, Upgrades};
use crate::control_plane::controller::SharedSnapshot;
use crate::data_plane::backend::{Backend, InflightGuard};
use crate::data_plane::cold::cold;
use crate::data_plane::gate::Gate;
use crate::data_plane::health::hold;
use crate::data_plane::http1::client::{self as h1, H1Body, H1Error, RawFields};
use crate::data_plane::limits::concurrency::Permits;
use crate::data_plane::route::{host_without_port, RequestView};
use crate::data_plane::snapshot::{Pool, Route, Snapshot, Tried};
use crate::data_plane::split::Pin as SessionPin;
use crate::data_plane::upstream::h2::{self as up_h2, H2Body, H2SendError, Lease, Pump, PumpError};
use crate::data_plane::upstream::{Sender, WireError};
use body::{RequestBody, ResponseBody, UpstreamBody};
use error::ProxyError;
use trail::Trail;

/// The client at the other end of a connection, with what every request from it
/// needs precomputed (its `X-Forwarded-For` value).
#[derive(Debug, Clone)]
pub struct Client {
    /// The client's address.
    pub addr: SocketAddr,
    ip_value: HeaderValue,
}

impl Client {
    /// Made once per connection.
    pub fn new(addr: SocketAddr) -> Self {
        Client {
            addr,
            ip_value: headers::client_value(addr.ip()),
        }
    }
}

/// The data plane shared by all connections of a listener.
#[derive(Debug)]
pub struct Proxy {
    snapshot: SharedSnapshot,
    scheme: &'static str,
    tunnels: TaskTracker,
    /// `listen.http1_fast_path`: bodiless requests may go on gateway-driven
    /// connections (`http1::client`).
    http1_fast_path: bool,
}

/// What a failed attempt leaves: the error, and the request when it is still whole
/// (never sent; or sent on a gateway-driven connection, which writes from it).
/// Whether it may go again is the error's to say (`request_unsent`,
/// `retryable_after_send`).
struct Failed {
    error: ProxyError,
    req: Option<Request<RequestBody>>,
}

impl Failed {
    fn with_request(error: ProxyError, req: Request<RequestBody>) -> Self {
        Failed {
            error,
            req: Some(req),
        }
    }

    fn consumed(error: ProxyError) -> Self {
        Failed { error, req: None }
    }
}

/// What `prepare` made of a request: where it goes, how it is sent, and what the
/// answer needs.
struct Prepared<'s, 'c> {
    route: &'s Route,
    /// Owned, so a hold can swap in the latest snapshot's version of the pool.
    pool: Arc<Pool>,
    /// The balancer's hash key, when the pool hashes.
    key: Option<u64>,
    /// On a route that learns sessions: handed to the split with the answer.
    session: Option<SessionPin>,
    /// The sticky cookie to set on the answer.
    set_cookie: Option<HeaderValue>,
    /// The client's side of an upgrade it asked for.
    client_upgrade: Option<OnUpgrade>,
    forwarding: headers::Forwarding<'c>,
    /// Whether the forwarding fields are in the request's map yet (hyper's
    /// client needs them there; a gateway-driven connection writes them itself).
    forwarding_in_map: bool,
    /// Neither body nor upgrade, with the fast path on: may go on a
    /// gateway-driven connection.
    fast: bool,
    /// May be sent again after it was sent once: retries, bodiless, idempotent.
    replayable: bool,
    /// How far the client's body has gone upstream (when it has one): the
    /// response-header timer starts once it is whole.
    upload: Option<Arc<body::Progress>>,
    /// A gRPC call's deadline (`grpc-timeout`), which bounds every attempt.
    deadline: Option<Instant>,
    /// A gRPC call: judged by its `grpc-status` (in the head or the trailers).
    grpc: bool,
}

/// The kind of connection an attempt goes on. Everything above [`exchange`] is
/// the same for each; another upstream protocol is another kind here.
#[derive(Clone, Copy, Debug)]
enum ConnKind {
    /// The gateway's own HTTP/1.1 client (`http1::client`): bodiless requests to
    /// plain-TCP backends.
    Http1,
    /// hyper's HTTP/1.1 client: bodies, upgrades, TLS backends.
    Hyper,
    /// A stream on a multiplexed HTTP/2 connection (`protocol = "h2c"` or `"h2"`).
    H2,
}

/// A backend's answer, by the kind of connection it came on.
// The large variant is the common one: boxing it would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Answer {
    /// From hyper's client; the sender goes back to the pool when the body ends.
    Hyper(Response<Incoming>, Sender),
    /// From a gateway-driven connection, whose head fields stay raw, passed on as
    /// they came.
    Http1(Response<H1Body>, RawFields),
    /// From an HTTP/2 stream; the stream's slot is held until its body ends.
    /// A gRPC call whose status is still to come has its judge here.
    H2(Response<h2::RecvStream>, Lease, Option<Box<grpc::Watch>>),
}

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Answer::Hyper(resp, _) => resp.status(),
            Answer::Http1(resp, _) => resp.status(),
            Answer::H2(resp, ..) => resp.status(),
        }
    }

    /// A gRPC call's answer whose status is not in its head: a 200 without
    /// `grpc-status`, the status to come in the trailers after the messages.
    fn grpc_pending(&self) -> bool {
        match self {
            Answer::H2(resp, ..) => grpc::head_code_index(resp.status(), resp.headers()).is_none(),
            _ => false,
        }
    }

    /// Gives the answer's body the judge of its trailers.
    fn watch_grpc(&mut self, watch: Box<grpc::Watch>) {
        if let Answer::H2(.., slot) = self {
            *slot = Some(watch);
        }
    }

    /// The status passive ejection and the pool's error rate (rollout gates)
    /// judge: a gRPC answer that failed before any message (trailers-only, HTTP
    /// 200) counts as its `grpc-status` maps to HTTP (UNAVAILABLE as a 503, …).
    fn verdict(&self) -> StatusCode {
        match self {
            Answer::H2(resp, ..) => grpc::trailers_only_status(resp.status(), resp.headers()),
            other => other.status(),
        }
    }

    /// Hands the answer's head to a route that learns sessions (which may
    /// rewrite its session id: such routes never use the raw-field client).
    #[cold]
    fn learn(&mut self, split: &crate::data_plane::split::Split, pin: SessionPin, pool: &PoolName) {
        match self {
            Answer::Hyper(resp, _) => split.answered(pin, resp.headers_mut(), pool),
            Answer::H2(resp, ..) => split.answered(pin, resp.headers_mut(), pool),
            Answer::Http1(_, fields) => {
                debug_assert!(!split.prefixes_sessions(), "a prefixing route went raw");
                split.learn(
                    pin,
                    &crate::data_plane::http1::fields::end_to_end_map(fields),
                    pool,
                );
            }
        }
    }
}

/// Removes the `<pool>~` the gateway put before the session id it gave the
/// client (`sticky.prefix`): the agent sees the id it named.
#[cold]
fn strip_session_prefix(
    fields: &mut HeaderMap,
    split: &crate::data_plane::split::Split,
    len: usize,
) {
    let Some(header) = split.sessions().map(|t| &t.settings().header) else {
        return;
    };
    let stripped = fields
        .get(header)
        .and_then(|v| v.as_bytes().get(len..))
        .and_then(|rest| HeaderValue::from_bytes(rest).ok());
    if let Some(v) = stripped {
        fields.insert(header.clone(), v);
    }
}

/// The head of a bodiless idempotent request, kept to replay it after a send failure.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Replay {
    fn of(req: &Request<RequestBody>) -> Self {
        Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        }
    }

    fn request(&self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::Empty);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

impl Proxy {
    /// `scheme` is what clients used to reach this listener (`X-Forwarded-Proto`);
    /// `http1_fast_path` is `listen.http1_fast_path` (`false`: hyper's client only).
    pub fn new(snapshot: SharedSnapshot, scheme: &'static str, http1_fast_path: bool) -> Self {
        Proxy {
            snapshot,
            scheme,
            tunnels: TaskTracker::new(),
            http1_fast_path,
        }
    }

    /// Tunnels (upgraded connections) still open; graceful shutdown waits on these.
    pub fn tunnels(&self) -> &TaskTracker {
        &self.tunnels
    }

    /// Serves one request; never fails (errors become responses): prepare →
    /// attempt → respond. The body is `None` when the request has none (the
    /// gateway's own HTTP/1 server knows).
    ///
    /// The steps are called from here rather than from an `async fn` of their own:
    /// each nested state machine is one more copy of the request's whole future as
    /// it starts, and one more move of the answer on its way out.
    pub async fn handle(
        &self,
        req: Request<Option<Incoming>>,
        client: &Client,
    ) -> Response<ResponseBody> {
        let mut snapshot = self.snapshot.load_full();
        let version = req.version();
        if snapshot.gated() {
            snapshot = match cold(self.pass_gate(snapshot, &req, client)).await {
                Ok(snapshot) => snapshot,
                Err(answer) => return answer,
            };
        }
        let grpc = grpc::is_grpc(req.headers());
        let mut trail = Trail::start(&snapshot, &req, client.addr);
        if grpc {
            trail.grpc();
        }
        let answered = match self.prepare(&snapshot, req, client, &mut trail) {
            Err(err) => Err(err),
            Ok((mut plan, req)) => {
                // Concurrency places are taken before any backend is picked (a
                // queued request must not hold one) and ride with the answer's
                // in-flight guard until its body or tunnel ends.
                let permits =
                    if plan.route.in_flight.is_none() && plan.pool.limits.concurrency.is_none() {
                        Ok(Permits::default())
                    } else if let Some(permits) = admit_now(plan.route, &plan.pool) {
                        Ok(permits)
                    } else {
                        // Full, or a queue to wait in: rare, and boxed like `hold`.
                        cold(Box::pin(admit(plan.route, &plan.pool))).await
                    };
                match permits {
                    Err(err) => Err(err),
                    Ok(permits) => match self.attempt(&mut plan, req, &mut trail).await {
                        Err(err) => Err(err),
                        Ok((answer, mut guard)) => {
                            guard.hold(permits);
                            let Prepared {
                                route,
                                client_upgrade,
                                set_cookie,
                                ..
                            } = plan;
                            self.respond(
                                answer,
                                guard,
                                client_upgrade.map(|on| (on, &route.upgrades)),
                                set_cookie,
                                route.timeouts.idle,
                                grpc,
                                &mut trail,
                            )
                        }
                    },
                }
            }
        };
        match answered {
            Ok(mut resp) => {
                if grpc {
                    trail.grpc_head(&resp);
                }
                trail.finish(&mut resp, None);
                resp
            }
            Err(err) => gateway_answer(err, version, grpc, trail),
        }
    }

    /// The route's gate (see [`crate::data_plane::gate`]): returns the snapshot to
    /// go on with (the latest, after a pause), or the gateway's answer
    /// (maintenance, a pause's deadline or full queue).
    async fn pass_gate(
        &self,
        mut snapshot: Arc<Snapshot>,
        req: &Request<Option<Incoming>>,
        client: &Client,
    ) -> Result<Arc<Snapshot>, Response<ResponseBody>> {
        let arrived = Instant::now();
        let mut deadline = None;
        let mut slot: Option<crate::data_plane::gate::PauseSlot> = None;
        loop {
            let host = request_host(req);
            let view = RequestView {
                host: host.map(|(host, _)| host_without_port(host)),
                path: req.uri().path(),
                method: req.method(),
                headers: req.headers(),
            };
            let Some(route) = snapshot.find(&view) else {
                return Ok(snapshot);
            };
            let refuse = |err: ProxyError| {
                let mut trail = Trail::start(&snapshot, req, client.addr);
                trail.route(route);
                gateway_answer(err, req.version(), grpc::is_grpc(req.headers()), trail)
            };
            let (spec, shared) = match &route.gate {
                None => return Ok(Arc::clone(&snapshot)),
                Some(Gate::Maintenance(page)) => {
                    let mut trail = Trail::start(&snapshot, req, client.addr);
                    trail.route(route);
                    let mut resp = page.answer(req.headers());
                    trail.finish(&mut resp, Some(crate::data_plane::gate::MAINTENANCE_CAUSE));
                    // As in `gateway_answer`: the metrics and the log keep the 503.
                    if req.version() >= Version::HTTP_2 && grpc::is_grpc(req.headers()) {
                        return Err(page.grpc_answer());
                    }
                    return Err(resp);
                }
                Some(Gate::Pause(pause)) => (pause.spec.clone(), Arc::clone(&pause.shared)),
            };
            // The first pause met sets the deadline; a pause changed meanwhile
            // does not restart it.
            let deadline = *deadline.get_or_insert_with(|| crate::clock::later(arrived, spec.max));
            if !slot.as_ref().is_some_and(|s| s.is_in(&shared)) {
                slot = shared.enter(spec.max_queued);
                if slot.is_none() {
                    return Err(refuse(ProxyError::PauseQueueFull(spec.max_queued)));
                }
            }
            if Instant::now() >= deadline {
                return Err(refuse(ProxyError::PausedTimeout));
            }
            {
                let notified = shared.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                // A swap between this snapshot's load and registering is seen here.
                if Arc::ptr_eq(&self.snapshot.load(), &snapshot) {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                }
            }
            snapshot = self.snapshot.load_full();
        }
    }

    /// Routes the request, picks its pool, and rewrites its head for the backend.
    fn prepare<'s, 'c>(
        &self,
        snapshot: &'s Snapshot,
        mut req: Request<Option<Incoming>>,
        client: &'c Client,
        trail: &mut Trail<'s>,
    ) -> Result<(Prepared<'s, 'c>, Request<RequestBody>), ProxyError> {
        framing::check(&req).map_err(ProxyError::Malformed)?;
        // One lookup of Host serves routing and `X-Forwarded-Host`.
        let host = request_host(&req);
        let view = RequestView {
            host: host.map(|(host, _)| host_without_port(host)),
            path: req.uri().path(),
            method: req.method(),
            headers: req.headers(),
        };
        let route = snapshot.find(&view).ok_or(ProxyError::NoRoute)?;
        trail.route(route);
        framing::check_declared_length(req.headers(), route.max_request_body)?;
        if let Some(rate) = &route.rate {
            if let Err(wait) = rate.check(req.headers(), client.addr.ip(), Instant::now()) {
                return Err(rate_limited(route, wait));
            }
        }
        let choice = route
            .split
            .pick(req.headers())
            .ok_or(ProxyError::NoHealthyBackend)?;
        // Split entries are few (two in a cutover): a pointer scan finds the metrics.
        let entry = route
            .split
            .entries()
            .iter()
            .position(|e| Arc::ptr_eq(&e.pool, choice.pool));
        trail.pool(route, entry);
        let pool = Arc::clone(choice.pool);
        let set_cookie = choice.set_cookie.cloned();
        let session = choice.session;
        let key = pool.request_key(req.headers(), client.addr.ip());
        let host_from_field = matches!(host, Some((_, Some(_))));
        // The Host field's own value when there is one (a reference count, no copy).
        let forwarded_host = host.and_then(|(host, field)| match field {
            Some(field) => Some(field.clone()),
            None => HeaderValue::from_str(host).ok(),
        });

        // Only the route's `upgrades` may become tunnels; any other upgrade request
        // goes on as a plain one (its `Upgrade` is stripped with the hop-by-hop rest).
        let h2_pool = pool.protocol().is_h2();
        let grpc = grpc::is_grpc(req.headers());
        if grpc {
            grpc::check_versions(req.version(), h2_pool)?;
        }
        // An HTTP/2 pool has no upgrades (RFC 9113 §8.6): the request goes as a
        // plain one.
        let upgrade = req.version() == Version::HTTP_11
            && !h2_pool
            && headers::keep_allowed_upgrades(req.headers_mut(), &route.upgrades);
        // `te: trailers` says the client takes trailers (gRPC needs it said):
        // the one TE value HTTP/2 allows, kept for an HTTP/2 backend.
        let te_trailers = h2_pool && grpc::asks_for_trailers(req.headers());
        let deadline = if grpc {
            grpc::timeout(req.headers()).map(|t| Instant::now() + t)
        } else {
            None
        };
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        if parts.version == Version::HTTP_2 {
            headers::join_cookies(&mut parts.headers);
        }
        if let Some(pin) = session.filter(|p| p.strip() > 0) {
            strip_session_prefix(&mut parts.headers, &route.split, pin.strip());
        }
        let named_gone = headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        if te_trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let bodiless = body.as_ref().is_none_or(http_body::Body::is_end_stream);
        if !bodiless && body_length_unknown(&parts.headers, body.as_ref()) {
            // hyper's client sends a GET, HEAD or CONNECT whose body has no known
            // length as bodiless unless the request says it is chunked; the client's
            // own `Transfer-Encoding` went with the hop-by-hop fields.
            parts.headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        // Routing read the host from the Host field when there was no authority in
        // the target: the field is still there unless `Connection` named fields.
        let host_kept = host_from_field && !named_gone;
        if !host_kept && !parts.headers.contains_key(header::HOST) {
            // HTTP/1.1 upstream needs Host (RFC 9112 §3.2): h2 clients send
            // :authority instead, an HTTP/1.0 absolute-form request may have none,
            // and a `Connection: host` nomination must not take it away.
            if let Some(h) = forwarded_host.clone() {
                parts.headers.insert(header::HOST, h);
            }
        }
        let forwarding = headers::Forwarding::new(
            &parts.headers,
            &client.ip_value,
            self.scheme,
            forwarded_host,
        );
        trail.request_id(forwarding.request_id().as_bytes());
        parts.uri = origin_form(&parts.uri);
        parts.version = Version::HTTP_11;
        // A request with neither body nor upgrade can go on a gateway-driven
        // connection (`http1::client`), which leaves it whole for a retry.
        let plain = bodiless && !upgrade;
        // A route that prefixes session ids rewrites its answers' fields, which
        // that path passes on raw.
        let fast = plain && self.http1_fast_path && !h2_pool && !route.split.prefixes_sessions();
        // That path writes the forwarding fields beside the others as it writes the
        // head; only hyper's client needs them in the map (set before its first use).
        let forwarding_in_map = !fast;
        if forwarding_in_map {
            forwarding.apply(&mut parts.headers);
        }
        // Whichever client sends it: a bodiless head can be sent again.
        let replayable = route.retries > 0 && plain && is_idempotent(&parts.method);
        // A copy for the route's mirror (never of an upgrade): started here, on
        // its own task; the body, if any, is teed as it goes to the primary.
        let tee = match &route.mirror {
            Some(mirror) if !upgrade && mirror.sample() => {
                mirror.start(&parts, !bodiless, client.addr.ip(), |fields| {
                    if !forwarding_in_map {
                        forwarding.apply(fields);
                    }
                })
            }
            _ => None,
        };
        let (mut body, upload) =
            RequestBody::client(body, route.max_request_body, route.timeouts.client_body);
        if let Some(tee) = tee {
            body.tee(tee);
        }
        let req = Request::from_parts(parts, body);
        let plan = Prepared {
            route,
            pool,
            key,
            session,
            set_cookie,
            client_upgrade,
            forwarding,
            forwarding_in_map,
            fast,
            replayable,
            upload,
            deadline,
            grpc,
        };
        Ok((plan, req))
    }

    /// Sends the request to a backend of the plan's pool until one answers: a
    /// failed attempt goes again to another backend when the retry rules allow it
    /// (always when the request was not sent; after sending, only a replayable
    /// request whose backend failed or timed out), and a pool with `hold` parks a request that
    /// finds no usable backend. Returns the answer and the backend's in-flight guard.
    async fn attempt<'s>(
        &self,
        plan: &mut Prepared<'s, '_>,
        mut req: Request<RequestBody>,
        trail: &mut Trail<'s>,
    ) -> Result<(Answer, InflightGuard), ProxyError> {
        let route = plan.route;
        // hyper's client consumes the request: a copy of the head is kept for a
        // retry after sending, made before the first attempt through it.
        let mut replay = None;
        let mut tried = Tried::default();
        let mut failures = 0usize;
        let mut hold_deadline = None;
        let mut last_error = None;
        // A backend's answer in `retry_on_status`, kept while another backend is
        // tried: the client gets it when no other backend can be.
        let mut kept: Option<(Answer, InflightGuard)> = None;
        if plan.pool.limits.retry_budget.is_some() {
            plan.pool.health().retry_window().request(Instant::now());
        }
        loop {
            let backend = match plan.pool.pick(plan.key, &tried) {
                Some(backend) => backend,
                None if kept.is_some() => return kept.ok_or(ProxyError::NoHealthyBackend),
                None => {
                    let pool = &plan.pool;
                    let Some(spec) = pool.policy().hold else {
                        if last_error.is_none() {
                            pool.health().traffic().record_error();
                        }
                        return Err(last_error.unwrap_or(ProxyError::NoHealthyBackend));
                    };
                    let deadline =
                        *hold_deadline.get_or_insert_with(|| Instant::now() + spec.timeout);
                    // Boxed like the connect path: rare, and large.
                    let held = hold::wait(&self.snapshot, pool, &spec, deadline, &mut tried);
                    match cold(Box::pin(held)).await {
                        Ok(current) => {
                            plan.pool = current;
                            continue;
                        }
                        Err(err) => {
                            tracing::debug!(pool = %pool.name, %err, "hold gave up");
                            pool.health().traffic().record_error();
                            return Err(ProxyError::NoHealthyBackend);
                        }
                    }
                }
            };
            let pool = &plan.pool;
            trail.attempt(backend, &route.name.0);
            let connection = match &pool.limits.breaker {
                None => None,
                Some(breaker) => match backend.state.connection_limit().try_admit() {
                    Some(permit) => Some(permit),
                    // At the cap: wait (bounded) or be refused; rare, and boxed.
                    None => {
                        match cold(Box::pin(connection_for(backend, pool, breaker, route))).await {
                            Ok(permit) => Some(permit),
                            // An answer kept for `retry_on_status` still goes to the client.
                            Err(err) => return kept.ok_or(err),
                        }
                    }
                },
            };
            let mut guard = backend.state.start_request();
            guard.hold_connection(connection);
            let started = Instant::now();
            let kind = if plan.fast && backend.state.conns().fast_path() {
                if plan.replayable && replay.is_none() && !route.retry_on_status.is_empty() {
                    // An answer in `retry_on_status` sends it again: the
                    // gateway-driven connection does not give it back after one.
                    replay = Some(Replay::of(&req));
                }
                ConnKind::Http1
            } else if backend.state.conns().h2().is_some() {
                if !plan.forwarding_in_map {
                    plan.forwarding.apply(req.headers_mut());
                    plan.forwarding_in_map = true;
                }
                if plan.replayable && replay.is_none() {
                    replay = Some(Replay::of(&req));
                }
                ConnKind::H2
            } else {
                if !plan.forwarding_in_map {
                    plan.forwarding.apply(req.headers_mut());
                    plan.forwarding_in_map = true;
                }
                if plan.replayable && replay.is_none() {
                    replay = Some(Replay::of(&req));
                }
                ConnKind::Hyper
            };
            let forwarding = (!plan.forwarding_in_map).then_some(&plan.forwarding);
            let upload = plan.upload.as_deref();
            let response_header = match plan.deadline {
                None => route.timeouts.response_header,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(started);
                    if left.is_zero() {
                        return Err(last_error.unwrap_or(ProxyError::ResponseTimeout));
                    }
                    left.min(route.timeouts.response_header)
                }
            };
            match exchange(
                kind,
                backend,
                req,
                &route.timeouts,
                response_header,
                forwarding,
                started,
                upload,
            )
            .await
            {
                Ok(mut answer) => {
                    let answered = Instant::now();
                    let latency = answered.saturating_duration_since(started);
                    backend.state.observe_latency(latency, answered);
                    trail.answered(latency, answered);
                    let verdict = answer.verdict();
                    // A gRPC call whose status comes after its messages is judged
                    // for ejection when its trailers pass (`grpc::Watch`); the
                    // attempt and its latency count now, an error then.
                    let pending = plan.grpc && answer.grpc_pending();
                    if !pending {
                        pool.report_response(backend, verdict);
                    }
                    pool.health().traffic().record_response(verdict, latency);
                    backend.state.traffic().record_response(verdict, latency);
                    // Never a gRPC call whose head came without its status:
                    // its outcome is not known before the client has the head.
                    if !pending
                        && failures < route.retries as usize
                        && route.retry_on_status.contains(&answer.status().as_u16())
                    {
                        let next = replay.as_ref().filter(|_| plan.replayable);
                        if let Some(next) = next.filter(|_| retry_allowed(pool, route)) {
                            tried.add(backend);
                            failures += 1;
                            kept = Some((answer, guard));
                            req = next.request();
                            continue;
                        }
                    }
                    if let Some(pin) = plan.session {
                        // Only routes with `sticky.learn_header` (a sharded table).
                        answer.learn(&route.split, pin, &pool.name);
                    }
                    if pending {
                        let watch =
                            grpc::Watch::new(Arc::clone(pool), backend.clone(), trail.counters());
                        answer.watch_grpc(watch);
                    }
                    return Ok((answer, guard));
                }
                Err(failed) if failed.error.is_client_fault() => {
                    // The client broke its own request: the backend answered
                    // nothing wrong, so nothing is reported against it.
                    drop(guard);
                    return Err(failed.error);
                }
                Err(failed) => {
                    report_failure(pool, backend, &failed.error);
                    tried.add(backend);
                    failures += 1;
                    let next = if failed.error.request_unsent() {
                        failed.req
                    } else if failed.error.retryable_after_send() && plan.replayable {
                        failed.req.or_else(|| replay.as_ref().map(Replay::request))
                    } else {
                        None
                    };
                    match next {
                        Some(next)
                            if failures <= route.retries as usize && retry_allowed(pool, route) =>
                        {
                            req = next;
                        }
                        _ => return kept.ok_or(failed.error),
                    }
                    last_error = Some(failed.error);
                }
            }
        }
    }

    /// Turns a backend's response into the client's.
    /// `client_upgrade` is there when the request asked for an upgrade its route
    /// allows (with the route's `upgrades`); `grpc` when it is a gRPC call.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        answer: Answer,
        guard: InflightGuard,
        client_upgrade: Option<(OnUpgrade, &Upgrades)>,
        set_cookie: Option<HeaderValue>,
        idle: Duration,
        grpc: bool,
        trail: &mut Trail<'_>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (resp, fields) = match answer {
            Answer::Hyper(resp, sender) => {
                return self.respond_hyper(
                    resp,
                    sender,
                    guard,
                    client_upgrade,
                    set_cookie,
                    idle,
                    trail,
                )
            }
            // Never sent for an upgrade: a 101 here is the backend's error.
            Answer::Http1(resp, _) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                return Err(ProxyError::BadUpgrade)
            }
            Answer::Http1(resp, fields) => (resp, fields),
            Answer::H2(resp, lease, watch) => {
                let (mut parts, recv) = resp.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers, false);
                let mut body = UpstreamBody::h2(H2Body::new(recv, lease), guard, idle);
                if let Some(watch) = watch {
                    body.watch_grpc(watch);
                }
                if grpc {
                    body.end_grpc_with_status();
                }
                return Ok(upstream_response(parts, body, None, set_cookie));
            }
        };
        // The map is empty: the fields stay raw, and their hop-by-hop ones are left
        // out where they are written (`headers::end_to_end`), so there is nothing to
        // strip.
        let (parts, body) = resp.into_parts();
        let body = UpstreamBody::h1(body, guard, idle);
        Ok(upstream_response(parts, body, Some(fields), set_cookie))
    }

    /// `respond` for an answer from hyper's client (requests with a body, upgrades):
    /// out of line, so its code is not among the gateway-driven path's.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn respond_hyper(
        &self,
        mut resp: Response<Incoming>,
        sender: Sender,
        guard: InflightGuard,
        client_upgrade: Option<(OnUpgrade, &Upgrades)>,
        set_cookie: Option<HeaderValue>,
        idle: Duration,
        trail: &mut Trail<'_>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // A 101 to a request that asked for no allowed upgrade, or to a
            // protocol the route does not allow, is the backend's error: the
            // connection must not become a tunnel past routing.
            let client_upgrade = match client_upgrade {
                Some((on, allowed)) if headers::switched_to_allowed(resp.headers(), allowed) => on,
                _ => return Err(ProxyError::BadUpgrade),
            };
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let tally = trail.tunnel();
            self.tunnels
                .spawn(tunnel::run(client_upgrade, upstream_upgrade, guard, tally));
            drop(sender);
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, ResponseBody::empty()));
        }
        let (mut parts, body) = resp.into_parts();
        let shape = framing::response_framing(
            parts.headers.contains_key(header::TRANSFER_ENCODING),
            parts.headers.contains_key(header::CONTENT_LENGTH),
        );
        if !shape.use_length {
            // hyper's client read the body by its coding; a length relayed beside
            // it would cut the client's copy short.
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        headers::strip_hop_by_hop(&mut parts.headers, false);
        let mut body = UpstreamBody::new(body, guard, sender, idle);
        if !shape.reusable {
            body.not_reusable();
        }
        Ok(upstream_response(parts, body, None, set_cookie))
    }
}

/// The client's response around a backend's body, with the sticky cookie if one
/// is to be set.
fn upstream_response(
    mut parts: http::response::Parts,
    body: UpstreamBody,
    fields: Option<RawFields>,
    set_cookie: Option<HeaderValue>,
) -> Response<ResponseBody> {
    if let Some(cookie) = set_cookie {
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    Response::from_parts(parts, ResponseBody::upstream(body, fields))
}

/// The refusal of a request over its route's `rate_limit`, counted; `wait` is
/// how long until its key may send again (`Retry-After`, whole seconds, ≥ 1).
#[cold]
fn rate_limited(route: &Route, wait: Duration) -> ProxyError {
    route.refusals.count(crate::data_plane::limits::Kind::Rate);
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    ProxyError::RateLimited {
        retry_after: u32::try_from(secs.max(1)).unwrap_or(u32::MAX),
    }
}

/// The request's places under its route's and its pool's `concurrency` when
/// both are free now, with no future to allocate; `None` when either is full
/// (what was taken is given back: [`admit`] starts again, waiting where it may).
#[inline]
fn admit_now(route: &Route, pool: &Pool) -> Option<Permits> {
    let mut permits = Permits::default();
    if let Some(limit) = &route.in_flight {
        permits.route = Some(limit.try_admit()?);
    }
    if pool.limits.concurrency.is_some() {
        permits.pool = Some(pool.health().in_flight().try_admit()?);
    }
    Some(permits)
}

/// The request's places under its route's and its pool's `concurrency` (the
/// route's first: a request its route refuses never waits on the pool's
/// queue); a refusal is counted against the route.
async fn admit(route: &Route, pool: &Pool) -> Result<Permits, ProxyError> {
    use crate::data_plane::limits::Kind;
    let mut permits = Permits::default();
    if let Some(limit) = &route.in_flight {
        match limit.admit().await {
            Ok(permit) => permits.route = Some(permit),
            Err(refused) => {
                route.refusals.count(Kind::InFlight);
                return Err(ProxyError::OverInFlight(refused));
            }
        }
    }
    if pool.limits.concurrency.is_some() {
        match pool.health().in_flight().admit().await {
            Ok(permit) => permits.pool = Some(permit),
            Err(refused) => {
                route.refusals.count(Kind::PoolInFlight);
                return Err(ProxyError::OverInFlight(refused));
            }
        }
    }
    Ok(permits)
}

/// A connection to `backend` under its pool's circuit breaker: at once, or after
/// waiting (bounded by the pool's `max_pending` and the route's connect timeout);
/// a refusal is counted against the route.
async fn connection_for(
    backend: &Backend,
    pool: &Pool,
    breaker: &crate::control_plane::config::spec::BreakerSpec,
    route: &Route,
) -> Result<crate::data_plane::limits::concurrency::Permit, ProxyError> {
    use crate::data_plane::limits::concurrency::Refused;
    use crate::data_plane::limits::Kind;
    let refused = match backend
        .state
        .connection_limit()
        .admit_queued(
            pool.health().pending(),
            breaker.max_pending as usize,
            route.timeouts.connect,
        )
        .await
    {
        Ok(permit) => return Ok(permit),
        Err(refused) => refused,
    };
    route.refusals.count(match refused {
        Refused::Full => Kind::Connections,
        Refused::QueueFull | Refused::QueueTimeout => Kind::Pending,
    });
    Err(ProxyError::Breaker(refused))
}

/// Whether the pool's retry budget (if it has one) allows one more retry now;
/// a retry it refuses is counted against the route.
#[inline]
fn retry_allowed(pool: &Pool, route: &Route) -> bool {
    let Some(budget) = &pool.limits.retry_budget else {
        return true;
    };
    if pool
        .health()
        .retry_window()
        .try_retry(budget, Instant::now())
    {
        return true;
    }
    route
        .refusals
        .count(crate::data_plane::limits::Kind::RetryBudget);
    false
}

/// Counts a failed attempt where passive ejection and the metrics see it.
#[cold]
#[inline(never)]
fn report_failure(pool: &Pool, backend: &Backend, error: &ProxyError) {
    tracing::debug!(backend = %backend.addr, err = %error, "attempt failed");
    if error.is_connect_failure() {
        backend.metrics.connect_errors.increment(1);
    }
    pool.report_error(backend, error);
    if !matches!(error, ProxyError::NotSent(_)) {
        pool.health().traffic().record_error();
        backend.state.traffic().record_error();
    }
}

/// The gateway's own answer to a request it could not forward.
#[cold]
#[inline(never)]
fn gateway_answer(
    err: ProxyError,
    version: Version,
    grpc: bool,
    trail: Trail<'_>,
) -> Response<ResponseBody> {
    let cause = err.cause();
    tracing::debug!(%err, cause, "answered by the gateway");
    let refused = err.breaks_framing();
    // A gRPC client reads only gRPC statuses: the same cause, in its terms (the
    // metrics and the access log keep the HTTP status of the cause).
    let answer_grpc = grpc && version >= Version::HTTP_2;
    let code = answer_grpc.then(|| grpc::code_of(&err));
    if let Some(code) = code {
        trail.count_grpc(code.index());
    }
    let mut resp = err.into_response();
    if refused && version < Version::HTTP_2 {
        // What follows on this connection may be the rest of a request
        // we refused to frame: never read it as a new one.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    trail.finish(&mut resp, Some(cause));
    match code {
        Some(code) => grpc::error_response(code, cause, resp.status()),
        None => resp,
    }
}

/// One exchange with one backend on a connection of `kind`: the answer, or why
/// it failed with whether the request was sent (the error says) and the request
/// when it is still whole. Not an `async fn`: that would nest one more state
/// machine in every request's future. `response_header` is the route's, or
/// less when a gRPC deadline is nearer.
#[allow(clippy::too_many_arguments)]
fn exchange<'a>(
    kind: ConnKind,
    backend: &'a Backend,
    req: Request<RequestBody>,
    timeouts: &'a Timeouts,
    response_header: Duration,
    forwarding: Option<&'a headers::Forwarding<'a>>,
    started: Instant,
    upload: Option<&'a body::Progress>,
) -> impl Future<Output = Result<Answer, Failed>> + Send + 'a {
    match kind {
        ConnKind::Http1 => Either::Left(send_h1(backend, req, timeouts, forwarding, started)),
        ConnKind::Hyper => Either::Right(Either::Left(cold(send(backend, req, timeouts, upload)))),
        ConnKind::H2 => Either::Right(Either::Right(cold(Box::pin(send_h2(
            backend,
            req,
            timeouts.connect,
            response_header,
            upload,
        ))))),
    }
}

/// One attempt on one backend: a pooled (or new) connection, then the request.
///
/// The response-header timer starts once the request's body (`upload`, when it
/// has one) has been taken whole: a long upload is not a late answer. While the
/// body goes up, the client body timeout bounds the client, and `response_header`
/// bounds a backend that stops taking the body.
async fn send(
    backend: &Backend,
    req: Request<RequestBody>,
    timeouts: &Timeouts,
    upload: Option<&body::Progress>,
) -> Result<Answer, Failed> {
    let pool = backend.state.conns();
    let mut conn = match pool.checkout(timeouts.connect).await {
        Ok(conn) => conn,
        Err(error) => return Err(Failed::with_request(error.into(), req)),
    };
    let mut req = req;
    loop {
        // A pooled connection is almost always ready: ask before making a timer.
        let ready = conn.sender.is_ready()
            || matches!(
                tokio::time::timeout(timeouts.connect, conn.sender.ready()).await,
                Ok(Ok(()))
            );
        if ready {
            let sent = conn.sender.try_send_request(req);
            let answer = async {
                tokio::pin!(sent);
                if let Some(upload) = upload {
                    tokio::select! {
                        biased;
                        answer = &mut sent => return Ok(answer),
                        uploaded = upload.sent(timeouts.response_header) => {
                            if !uploaded {
                                return Err(());
                            }
                        }
                    }
                }
                tokio::time::timeout(timeouts.response_header, sent)
                    .await
                    .map_err(drop)
            };
            match answer.await {
                Ok(Ok(resp)) => return Ok(Answer::Hyper(resp, conn.sender)),
                Err(()) => return Err(Failed::consumed(ProxyError::ResponseTimeout)),
                Ok(Err(mut err)) => match err.take_message() {
                    Some(unsent) if conn.reused => req = unsent,
                    Some(unsent) => {
                        let error = ProxyError::not_sent(err.into_error());
                        return Err(Failed::with_request(error, unsent));
                    }
                    None => {
                        let err = err.into_error();
                        let error = match body::body_too_large(&err) {
                            Some(limit) => ProxyError::BodyTooLarge { limit },
                            None => match body::client_fault(&err) {
                                Some(fault) => ProxyError::ClientBody(fault, Some(err)),
                                None => ProxyError::sent(err),
                            },
                        };
                        return Err(Failed::consumed(error));
                    }
                },
            }
        } else if !conn.reused {
            let error = ProxyError::Connect(std::io::Error::other("new connection not ready"));
            return Err(Failed::with_request(error, req));
        }
        // A pooled connection the backend had closed: the request never left, so try
        // once more on a fresh connection to the same backend.
        conn = match cold(Box::pin(pool.connect(timeouts.connect))).await {
            Ok(sender) => crate::data_plane::upstream::Conn {
                sender,
                reused: false,
            },
            Err(error) => return Err(Failed::with_request(error.into(), req)),
        };
    }
}

/// One attempt on a gateway-driven connection (`http1::client`): a request without
/// body or upgrade, to a plain-TCP backend. The head is written from the request,
/// which stays whole: a failure hands it back for a retry.
async fn send_h1(
    backend: &Backend,
    req: Request<RequestBody>,
    timeouts: &Timeouts,
    forwarding: Option<&headers::Forwarding<'_>>,
    started: Instant,
) -> Result<Answer, Failed> {
    let pool = backend.state.conns();
    // The exchange's deadline counts from when it can begin: the attempt's start
    // (the caller's clock reading) on a pooled connection, after a connect else.
    let (mut conn, mut reused, begins) = match pool.pop_h1(started) {
        Some(conn) => (conn, true, started),
        // Boxed like hyper's connect path: rare, and it would size every request.
        None => match cold(Box::pin(pool.connect_h1(timeouts.connect))).await {
            Ok(conn) => (conn, false, Instant::now()),
            Err(error) => return Err(Failed::with_request(error.into(), req)),
        },
    };
    // The connection's own timer bounds the exchange (no timer made per request).
    let deadline = (begins + timeouts.response_header, timeouts.response_header);
    loop {
        let exchange = async {
            let fields = |h: &HeaderMap, out: &mut Vec<u8>| match forwarding {
                Some(f) => f.write_fields(h, out),
                None => h1::write_fields(h, out),
            };
            conn.write_request(&req, fields, deadline)
                .await
                .map_err(|e| (e, false))?;
            conn.read_response(req.method(), deadline)
                .await
                .map_err(|e| (e, true))
        };
        let outcome = match exchange.await {
            Err((H1Error::TimedOut(_), _)) => Err(()),
            other => Ok(other),
        };
        let again_on_fresh = match &outcome {
            // A pooled connection the backend had just closed: the request never
            // left, so try once more on a fresh connection to the same backend.
            Ok(Err((_, false))) => reused,
            // Closed without a byte of answer on a pooled connection: the backend
            // closed it as idle as the request went out (the race every keep-alive
            // client has). An idempotent request goes once more, on a fresh one.
            Ok(Err((H1Error::ClosedBeforeHead, true))) => reused && is_idempotent(req.method()),
            _ => false,
        };
        if again_on_fresh {
            conn = match cold(Box::pin(pool.connect_h1(timeouts.connect))).await {
                Ok(conn) => conn,
                Err(error) => return Err(Failed::with_request(error.into(), req)),
            };
            reused = false;
            continue;
        }
        let error = match outcome {
            Ok(Ok((resp, fields))) => return Ok(Answer::Http1(resp, fields)),
            Err(_) => ProxyError::ResponseTimeout,
            Ok(Err((err, false))) => {
                return Err(Failed::with_request(ProxyError::not_sent(err), req))
            }
            Ok(Err((err, true))) => ProxyError::sent(err),
        };
        return Err(Failed::with_request(error, req));
    }
}

/// Streams one attempt opens, beyond one per connection the backend may have,
/// when the backend did not process them (GOAWAY, `REFUSED_STREAM`) before the
/// request goes back as unsent: every connection may be going away at once (a
/// backend restarting), and each failed open retires one.
const EXTRA_H2_OPENS: u32 = 2;

/// One attempt on an HTTP/2 backend: a stream on one of its multiplexed
/// connections. A stream the backend did not process goes again on another
/// connection of the backend (the one that went away is retired), a bounded
/// number of times; then the request goes back whole, as unsent, for the retry
/// rules to send elsewhere. A body is sent while the answer is awaited (the
/// response-header timer starts once it is whole, as with hyper's client); what
/// is left of it when the answer comes (streaming calls) goes on by itself.
async fn send_h2(
    backend: &Backend,
    req: Request<RequestBody>,
    connect: Duration,
    response_header: Duration,
    upload: Option<&body::Progress>,
) -> Result<Answer, Failed> {
    let conns = backend.state.conns();
    let Some(pool) = conns.h2() else {
        let error = ProxyError::Connect(std::io::Error::other("the backend has no HTTP/2 pool"));
        return Err(Failed::with_request(error, req));
    };
    let (parts, body) = req.into_parts();
    let mut body = body;
    let mut opens = 0u32;
    let max_opens = pool.spec().max_connections.saturating_add(EXTRA_H2_OPENS);
    loop {
        let lease = match pool.lease(connect).await {
            Ok(lease) => lease,
            Err(error) => {
                return Err(Failed::with_request(
                    error.into(),
                    Request::from_parts(parts, body),
                ))
            }
        };
        let head = up_h2::head(&parts, pool.scheme(), backend.addr);
        let end = http_body::Body::is_end_stream(&body);
        opens += 1;
        let (answer, stream) = match up_h2::open(&lease, head, end).await {
            Ok(opened) => opened,
            Err(H2SendError::Unprocessed(err) | H2SendError::Failed(err)) => {
                // Never reached the backend: the connection is going away.
                pool.retire(&lease);
                if opens < max_opens {
                    continue;
                }
                let error = ProxyError::not_sent(WireError::H2(err));
                return Err(Failed::with_request(
                    error,
                    Request::from_parts(parts, body),
                ));
            }
        };
        let (mut pump, spare) = if end {
            drop(stream);
            (None, Some(body))
        } else {
            (Some(Pump::new(body, stream)), None)
        };
        let waited = wait_h2(answer, pump.as_mut(), response_header, upload).await;
        let err = match waited {
            Ok(resp) => {
                if let Some(pump) = pump {
                    pump.spawn_rest();
                }
                return Ok(Answer::H2(resp, lease, None));
            }
            Err(H2Wait::Timeout) => return Err(Failed::consumed(ProxyError::ResponseTimeout)),
            Err(H2Wait::Body(err)) => {
                let error = match body::body_too_large(&*err) {
                    Some(limit) => ProxyError::BodyTooLarge { limit },
                    None => match body::client_fault(&*err) {
                        Some(fault) => ProxyError::ClientBody(fault, None),
                        None => ProxyError::sent(WireError::H2(h2::Reason::CANCEL.into())),
                    },
                };
                return Err(Failed::consumed(error));
            }
            Err(H2Wait::Stream(err)) => err,
        };
        if !up_h2::unprocessed(&err) {
            return Err(Failed::consumed(ProxyError::sent(WireError::H2(err))));
        }
        // Not processed: the request may go again if its body is still whole.
        let whole = match pump {
            None => spare,
            Some(pump) => pump.into_untouched(),
        };
        let Some(whole) = whole else {
            return Err(Failed::consumed(ProxyError::sent(WireError::H2(err))));
        };
        if err.is_go_away() {
            pool.retire(&lease);
        }
        drop(lease);
        body = whole;
        if opens >= max_opens {
            let error = ProxyError::not_sent(WireError::H2(err));
            return Err(Failed::with_request(
                error,
                Request::from_parts(parts, body),
            ));
        }
    }
}

/// Why no answer came on an HTTP/2 stream.
enum H2Wait {
    /// No response head within the timer (which starts once the body is whole).
    Timeout,
    /// The client's body failed on its way up.
    Body(body::BoxError),
    /// The stream failed.
    Stream(h2::Error),
}

/// Waits for the answer on a stream while `pump` sends the request body; the
/// `response_header` timer starts once the body is whole, and a backend that
/// takes none of the body for that long (while the client is not the one
/// waited on) is as late as one that does not answer.
async fn wait_h2(
    answer: h2::client::ResponseFuture,
    mut pump: Option<&mut Pump>,
    response_header: Duration,
    upload: Option<&body::Progress>,
) -> Result<Response<h2::RecvStream>, H2Wait> {
    tokio::pin!(answer);
    let timer = tokio::time::sleep(response_header);
    tokio::pin!(timer);
    let mut timing = pump.as_ref().is_none_or(|p| p.is_done());
    let mut upload_whole = false;
    loop {
        let sending = pump.as_deref_mut().filter(|p| !p.is_done());
        let stalled = match upload {
            Some(upload) if !timing && !upload_whole => Either::Left(upload.sent(response_header)),
            _ => Either::Right(std::future::pending::<bool>()),
        };
        tokio::select! {
            biased;
            resp = &mut answer => return resp.map_err(H2Wait::Stream),
            sent = async {
                match sending {
                    Some(pump) => std::future::poll_fn(|cx| pump.poll_send(cx)).await,
                    None => std::future::pending().await,
                }
            } => match sent {
                Ok(()) => {
                    timer.as_mut().reset(Instant::now() + response_header);
                    timing = true;
                }
                Err(PumpError::Body(err)) => return Err(H2Wait::Body(err)),
                // The answer carries the stream's own error.
                Err(PumpError::Stream(_)) => {
                    timer.as_mut().reset(Instant::now() + response_header);
                    timing = true;
                }
            },
            () = &mut timer, if timing => return Err(H2Wait::Timeout),
            moved = stalled => {
                if !moved {
                    return Err(H2Wait::Timeout);
                }
                upload_whole = true;
            }
        }
    }
}

/// The request's host: the URI authority (HTTP/2, absolute-form), else the Host
/// field, which comes along as well.
fn request_host<B>(req: &Request<B>) -> Option<(&str, Option<&HeaderValue>)> {
    match req.uri().authority() {
        Some(authority) => Some((authority.as_str(), None)),
        None => {
            let field = req.headers().get(header::HOST)?;
            Some((field.to_str().ok()?, Some(field)))
        }
    }
}

/// Path and query only, as an HTTP/1.1 origin server expects.
/// A body with no `Content-Length` and no exact size (HTTP/1.1 chunked, h2 DATA
/// without `content-length`): it goes upstream chunked.
fn body_length_unknown(headers: &HeaderMap, body: Option<&Incoming>) -> bool {
    !headers.contains_key(header::CONTENT_LENGTH)
        && body.is_some_and(|b| http_body::Body::size_hint(b).exact().is_none())
}

fn origin_form(uri: &Uri) -> Uri {
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(pq)
}

/// RFC 9110 §9.2.2 idempotent methods.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}
