//! The limits part of the state view: a route's rate and concurrency limits with
//! what they refused, a pool's concurrency limit; live counts read from the
//! snapshot's atomics when the state is asked for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::control_plane::config::spec::{ConcurrencySpec, RateKey, RateLimitSpec, Source};
use crate::data_plane::limits::concurrency::InFlight;
use crate::data_plane::limits::Kind;
use crate::data_plane::snapshot::Route;

/// A route's limits and refusals (absent from a route with no limit that has
/// refused nothing).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteLimitsView {
    /// `rate_limit` in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateView>,
    /// `concurrency` in force, with the live count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlightView>,
    /// Requests refused since the route appeared, by kind
    /// (`sluicegate_limited_total`'s `kind`); kinds with none are left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, u64>,
}

/// A rate limit as the state shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateView {
    /// Requests a second per key.
    pub rate: f64,
    pub burst: u32,
    /// `client_ip`, `header:NAME` or `route`.
    pub key: String,
    pub max_keys: usize,
    /// `file`, or `api` when an admin override is in force.
    pub source: Source,
}

/// A concurrency limit as the state shows it, with the count read now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightView {
    pub max_in_flight: u32,
    /// Requests admitted and not ended (bodies and tunnels included).
    pub in_flight: usize,
    pub queue: u32,
    /// Requests waiting in the queue now.
    pub waiting: usize,
}

impl RateView {
    /// `spec` from `source`.
    pub fn of(spec: &RateLimitSpec, source: Source) -> RateView {
        RateView {
            rate: spec.rate,
            burst: spec.burst,
            key: match &spec.key {
                RateKey::ClientIp { .. } => "client_ip".to_owned(),
                RateKey::Header(name) => format!("header:{name}"),
                RateKey::Route => "route".to_owned(),
            },
            max_keys: spec.max_keys,
            source,
        }
    }
}

impl InFlightView {
    /// `spec` with `live`'s counts.
    pub fn of(spec: &ConcurrencySpec, live: Option<&InFlight>) -> InFlightView {
        InFlightView {
            max_in_flight: spec.max_in_flight,
            in_flight: live.map_or(0, InFlight::in_flight),
            queue: spec.queue,
            waiting: live.map_or(0, InFlight::waiting),
        }
    }
}

/// Route `live`'s limits (`rate_source`: where its `rate_limit` came from);
/// `None` when it has none and has refused nothing.
pub(super) fn route_limits(
    spec: &crate::control_plane::config::spec::RouteLimitsSpec,
    rate_source: Source,
    live: Option<&Route>,
) -> Option<RouteLimitsView> {
    let refused: BTreeMap<String, u64> = live
        .map(|r| {
            Kind::ALL
                .iter()
                .map(|&k| (k.as_str().to_owned(), r.refusals.get(k)))
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .unwrap_or_default();
    let view = RouteLimitsView {
        rate: spec.rate.as_ref().map(|r| RateView::of(r, rate_source)),
        in_flight: spec
            .concurrency
            .as_ref()
            .map(|c| InFlightView::of(c, live.and_then(|r| r.in_flight.as_deref()))),
        refused,
    };
    (view != RouteLimitsView::default()).then_some(view)
}
