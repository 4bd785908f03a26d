//! Passive outlier ejection from the outcomes of real requests.
//!
//! The proxy reports every attempt ([`Pool::report_response`], [`Pool::report_error`]):
//! connect errors, failed TLS handshakes (a `tls` pool), connect and response
//! timeouts and broken responses are failures,
//! 5xx answers too when `count_5xx` (the default), anything else is a success. A
//! stale pooled connection (`NotSent`) is neither: it says nothing about the backend.
//!
//! `consecutive_failures` in a row eject a backend for `base_ejection × 2^level`
//! (capped at `max_ejection`), `level` being the ejections since its last clean
//! probation. When the time is up the backend is on *probation*: eligible again, and
//! the next outcome decides. A success clears the history (level 0); a failure ejects
//! it again at once, for twice as long. Expiry needs no timer: `is_ejected` compares
//! the deadline with the clock when the ejected flag is set.
//!
//! `max_ejected_percent` is never exceeded: an ejection is decided under the pool's
//! ejection lock, counting the backends whose ejection is running; if one more would
//! exceed `floor(backends × percent / 100)` the backend stays in (and is tried again
//! on its next failure). Without `[pools.outlier]` reporting is two loads and a
//! return.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;

use super::HealthChange;
use crate::control_plane::config::spec::OutlierSpec;
use crate::data_plane::backend::Backend;
use crate::data_plane::proxy::error::ProxyError;
use crate::data_plane::snapshot::Pool;

/// What one attempt on a backend says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer that counts as healthy: clears the failure streak, ends probation.
    Success,
    /// A connect error, timeout, broken response (or 5xx with `count_5xx`).
    Failure,
}

impl Outcome {
    /// A response head with `status` arrived.
    pub fn of_status(spec: &OutlierSpec, status: StatusCode) -> Outcome {
        if spec.count_5xx && status.is_server_error() {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }

    /// An attempt failed with `error`; `None` when that says nothing about the backend.
    pub fn of_error(error: &ProxyError) -> Option<Outcome> {
        match error {
            ProxyError::Connect(_)
            | ProxyError::ConnectTimeout
            | ProxyError::UpstreamTls(_)
            | ProxyError::UpstreamNotH2(_)
            | ProxyError::ResponseTimeout
            | ProxyError::Upstream(_) => Some(Outcome::Failure),
            ProxyError::NotSent(_)
            | ProxyError::BadUpgrade
            | ProxyError::NoRoute
            | ProxyError::NoHealthyBackend
            | ProxyError::PausedTimeout
            | ProxyError::PauseQueueFull(_)
            | ProxyError::Malformed(_)
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::RateLimited { .. }
            | ProxyError::OverInFlight(_)
            | ProxyError::Breaker(_)
            | ProxyError::ClientBody(..)
            | ProxyError::GrpcNeedsH2 { .. } => None,
        }
    }
}

impl Pool {
    /// Reports that `backend` (of this pool) answered with `status`.
    #[inline]
    pub fn report_response(&self, backend: &Backend, status: StatusCode) {
        if let Some(spec) = &self.policy().outlier {
            self.record(spec, backend, Outcome::of_status(spec, status));
        }
    }

    /// Reports that an attempt on `backend` (of this pool) failed with `error`.
    pub fn report_error(&self, backend: &Backend, error: &ProxyError) {
        if let (Some(spec), Some(outcome)) = (&self.policy().outlier, Outcome::of_error(error)) {
            self.record(spec, backend, outcome);
        }
    }

    /// Feeds one outcome to the ejection state machine of `backend`.
    pub fn record(&self, spec: &OutlierSpec, backend: &Backend, outcome: Outcome) {
        let h = backend.state.health();
        match outcome {
            Outcome::Success => {
                if h.failures.load(Ordering::Relaxed) != 0 {
                    h.failures.store(0, Ordering::Relaxed);
                }
                // Only the first success after the ejection ended clears it; a success
                // of a request that started before the ejection changes nothing.
                if h.in_probation()
                    && h.ejected
                        .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    h.ejection_level.store(0, Ordering::Relaxed);
                    self.health().publish(backend.addr, HealthChange::Restored);
                }
            }
            Outcome::Failure => {
                if h.ejected.load(Ordering::Acquire) {
                    if h.in_probation() {
                        self.eject(spec, backend);
                    }
                    // Else a late failure of a request sent before the ejection.
                    return;
                }
                let failures = h.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                if failures >= spec.consecutive_failures {
                    self.eject(spec, backend);
                }
            }
        }
    }

    /// Ejects `backend` if the pool's cap allows; returns whether it did.
    fn eject(&self, spec: &OutlierSpec, backend: &Backend) -> bool {
        let Some(_lock) = self.health().try_lock_ejection() else {
            return false;
        };
        let h = backend.state.health();
        if h.is_ejected() {
            return false;
        }
        let total = self.backends().count();
        let running = self
            .backends()
            .filter(|b| b.state.health().is_ejected())
            .count();
        let cap = total * usize::from(spec.max_ejected_percent) / 100;
        if running + 1 > cap {
            tracing::debug!(
                pool = %self.name,
                backend = %backend.addr,
                running,
                cap,
                "not ejected: max_ejected_percent reached"
            );
            return false;
        }
        let level = h.ejection_level.load(Ordering::Relaxed);
        let duration = ejection_time(spec, level);
        let now = h.now();
        let until = now.saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
        h.ejected_until.store(until, Ordering::Relaxed);
        h.ejected.store(true, Ordering::Release);
        h.ejection_level
            .store(level.saturating_add(1), Ordering::Relaxed);
        h.failures.store(0, Ordering::Relaxed);
        h.ejections_total.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            pool = %self.name,
            backend = %backend.addr,
            for_ = %humantime::format_duration(duration),
            "ejected by outlier detection"
        );
        if let Some(until) = h.ejected_until() {
            let level = level.saturating_add(1);
            self.health()
                .publish(backend.addr, HealthChange::Ejected { until, level });
        }
        true
    }
}

/// `base × 2^level`, at most `max`.
pub(crate) fn ejection_time(spec: &OutlierSpec, level: u32) -> Duration {
    1u32.checked_shl(level)
        .and_then(|factor| spec.base_ejection.checked_mul(factor))
        .map_or(spec.max_ejection, |d| d.min(spec.max_ejection))
}

#[cfg(test)]
mod tests;
