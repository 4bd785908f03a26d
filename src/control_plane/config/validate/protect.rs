//! Checks of the protection settings (`docs/limits.md`): a pool's
//! `retry_budget`, a route's `retry_on_status` and `rate_limit`, the `concurrency` of both. Each reports at its key path and
//! returns `None` on error.

use std::net::IpAddr;

use http::HeaderName;

use super::values::check_duration;
use super::Report;
use crate::control_plane::config::raw::{
    RawBreaker, RawConcurrency, RawPool, RawRateLimit, RawRetryBudget, RawRoute,
};
use crate::control_plane::config::spec::{
    BreakerSpec, ConcurrencySpec, IpNet, PoolLimitsSpec, RateKey, RateLimitSpec, RetryBudgetSpec,
    RouteLimitsSpec,
};

/// Most statuses in `retry_on_status`.
const MAX_RETRY_STATUSES: usize = 16;

/// `retry_budget` and `concurrency` of pool `path` (`pools[i]`).
pub(super) fn check_pool_limits(
    path: &str,
    raw: &RawPool,
    report: &mut Report,
) -> Option<PoolLimitsSpec> {
    let retry_budget = match &raw.retry_budget {
        None => Some(None),
        Some(b) => check_retry_budget(&format!("{path}.retry_budget"), b, report).map(Some),
    };
    let concurrency = check_concurrency(path, raw.concurrency.as_ref(), report);
    let breaker = match &raw.circuit_breaker {
        None => Some(None),
        Some(b) => check_breaker(&format!("{path}.circuit_breaker"), b, report).map(Some),
    };
    Some(PoolLimitsSpec {
        retry_budget: retry_budget?,
        concurrency: concurrency?,
        breaker: breaker?,
    })
}

fn check_breaker(path: &str, raw: &RawBreaker, report: &mut Report) -> Option<BreakerSpec> {
    let max = ConcurrencySpec::MAX_IN_FLIGHT;
    let max_connections = match raw.max_connections {
        None => {
            report.add(
                format!("{path}.max_connections"),
                "max_connections is required: connections to one backend at once, e.g. max_connections = 100",
            );
            None
        }
        Some(n) => match u32::try_from(n) {
            Ok(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                report.add(
                    format!("{path}.max_connections"),
                    format!("must be between 1 and {max}, got {n}"),
                );
                None
            }
        },
    };
    let max_queue = ConcurrencySpec::MAX_QUEUE;
    let pending = raw.max_pending.unwrap_or(0);
    let max_pending = match u32::try_from(pending) {
        Ok(n) if n <= max_queue => Some(n),
        _ => {
            report.add(
                format!("{path}.max_pending"),
                format!(
                    "must be between 0 (no waiting: 503 at once) and {max_queue}, got {pending}"
                ),
            );
            None
        }
    };
    Some(BreakerSpec {
        max_connections: max_connections?,
        max_pending: max_pending?,
    })
}

fn check_retry_budget(
    path: &str,
    raw: &RawRetryBudget,
    report: &mut Report,
) -> Option<RetryBudgetSpec> {
    let percent = match raw.percent {
        None => Some(RetryBudgetSpec::DEFAULT_PERCENT),
        Some(p) => match u8::try_from(p) {
            Ok(p) if p <= 100 => Some(p),
            _ => {
                report.add(
                    format!("{path}.percent"),
                    format!("must be a percentage between 0 and 100, got {p}"),
                );
                None
            }
        },
    };
    let max = RetryBudgetSpec::MAX_MIN_PER_SECOND;
    let min_per_second = match raw.min_per_second {
        None => Some(RetryBudgetSpec::DEFAULT_MIN_PER_SECOND),
        Some(n) => match u32::try_from(n) {
            Ok(n) if n <= max => Some(n),
            _ => {
                report.add(
                    format!("{path}.min_per_second"),
                    format!("must be between 0 and {max}, got {n}"),
                );
                None
            }
        },
    };
    Some(RetryBudgetSpec {
        percent: percent?,
        min_per_second: min_per_second?,
    })
}

/// `retry_on_status = [502, 503, 504]` of route `path` (`routes[i]`): 5xx
/// statuses, each once (a 4xx is the client's request, the same everywhere).
pub(super) fn check_retry_on_status(
    path: &str,
    raw: Option<&[i64]>,
    report: &mut Report,
) -> Option<Box<[u16]>> {
    let Some(raw) = raw else {
        return Some(Box::default());
    };
    let path = format!("{path}.retry_on_status");
    if raw.len() > MAX_RETRY_STATUSES {
        report.add(
            &path,
            format!(
                "{} statuses listed; use at most {MAX_RETRY_STATUSES}",
                raw.len()
            ),
        );
        return None;
    }
    let mut ok = true;
    let mut statuses = Vec::with_capacity(raw.len());
    for (i, &status) in raw.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match u16::try_from(status) {
            Ok(s) if (500..=599).contains(&s) => {
                if statuses.contains(&s) {
                    report.add(at, format!("{s} is listed twice; keep one"));
                    ok = false;
                } else {
                    statuses.push(s);
                }
            }
            _ => {
                report.add(
                    at,
                    format!(
                        "{status} is not a 5xx status; only backend failures (500-599) are retried"
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then(|| statuses.into_boxed_slice())
}

/// `rate_limit` and `concurrency` of route `path` (`routes[i]`).
pub(super) fn check_route_limits(
    path: &str,
    raw: &RawRoute,
    report: &mut Report,
) -> Option<RouteLimitsSpec> {
    let rate = match &raw.rate_limit {
        None => Some(None),
        Some(r) => check_rate_limit(&format!("{path}.rate_limit"), r, report).map(Some),
    };
    let concurrency = check_concurrency(path, raw.concurrency.as_ref(), report);
    Some(RouteLimitsSpec {
        rate: rate?,
        concurrency: concurrency?,
    })
}

/// `concurrency = { max_in_flight, queue, queue_timeout }` of route or pool `path`.
fn check_concurrency(
    path: &str,
    raw: Option<&RawConcurrency>,
    report: &mut Report,
) -> Option<Option<ConcurrencySpec>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    let path = format!("{path}.concurrency");
    let max = ConcurrencySpec::MAX_IN_FLIGHT;
    let max_in_flight = match raw.max_in_flight {
        None => {
            report.add(
                format!("{path}.max_in_flight"),
                "max_in_flight is required: requests at once, e.g. max_in_flight = 100",
            );
            None
        }
        Some(n) => match u32::try_from(n) {
            Ok(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                report.add(
                    format!("{path}.max_in_flight"),
                    format!("must be between 1 and {max}, got {n}"),
                );
                None
            }
        },
    };
    let max_queue = ConcurrencySpec::MAX_QUEUE;
    let queue = match u32::try_from(raw.queue.unwrap_or(0)) {
        Ok(n) if n <= max_queue => Some(n),
        _ => {
            report.add(
                format!("{path}.queue"),
                format!(
                    "must be between 0 (no waiting: 503 at once) and {max_queue}, got {}",
                    raw.queue.unwrap_or(0)
                ),
            );
            None
        }
    };
    let queue_timeout = match &raw.queue_timeout {
        None => Some(ConcurrencySpec::DEFAULT_QUEUE_TIMEOUT),
        Some(d) => check_duration(d, &format!("{path}.queue_timeout"), report),
    };
    if raw.queue_timeout.is_some() && queue == Some(0) {
        report.add(
            format!("{path}.queue_timeout"),
            "queue_timeout needs a queue; set queue = N or remove queue_timeout",
        );
        return None;
    }
    Some(Some(ConcurrencySpec {
        max_in_flight: max_in_flight?,
        queue: queue?,
        queue_timeout: queue_timeout?,
    }))
}

pub(super) fn check_rate_limit(
    path: &str,
    raw: &RawRateLimit,
    report: &mut Report,
) -> Option<RateLimitSpec> {
    let max_rate = RateLimitSpec::MAX_RATE;
    let rate = match raw.rate {
        None => {
            report.add(
                format!("{path}.rate"),
                "rate is required: requests a second, e.g. rate = 10",
            );
            None
        }
        Some(r) if r.is_finite() && r > 0.0 && r <= max_rate => Some(r),
        Some(r) => {
            report.add(
                format!("{path}.rate"),
                format!("must be above 0 and at most {max_rate} requests a second, got {r}"),
            );
            None
        }
    };
    let max_burst = RateLimitSpec::MAX_BURST;
    let burst = match raw.burst {
        // The default lets a client use one second's worth at once.
        None => rate.map(|r| (r.ceil() as u32).clamp(1, max_burst)),
        Some(b) => match u32::try_from(b) {
            Ok(b) if (1..=max_burst).contains(&b) => Some(b),
            _ => {
                report.add(
                    format!("{path}.burst"),
                    format!("must be between 1 and {max_burst}, got {b}"),
                );
                None
            }
        },
    };
    let trusted = check_trusted_proxies(path, raw.trusted_proxies.as_deref(), report);
    let key = match raw.key.as_deref().unwrap_or("client_ip") {
        "client_ip" => trusted.map(|trusted| RateKey::ClientIp { trusted }),
        "route" => Some(RateKey::Route),
        other => {
            match other
                .strip_prefix("header:")
                .map(|n| HeaderName::from_bytes(n.as_bytes()))
            {
                Some(Ok(name)) => Some(RateKey::Header(name)),
                _ => {
                    report.add(
                    format!("{path}.key"),
                    format!("{other:?} is not a key; use \"client_ip\", \"header:NAME\" or \"route\""),
                );
                    None
                }
            }
        }
    };
    if raw.trusted_proxies.is_some() && !matches!(key, Some(RateKey::ClientIp { .. }) | None) {
        report.add(
            format!("{path}.trusted_proxies"),
            "trusted_proxies only applies to key = \"client_ip\"; remove it",
        );
        return None;
    }
    let max = RateLimitSpec::MAX_MAX_KEYS;
    let max_keys = match raw.max_keys {
        None => Some(RateLimitSpec::DEFAULT_MAX_KEYS),
        Some(n) => match usize::try_from(n) {
            Ok(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                report.add(
                    format!("{path}.max_keys"),
                    format!("must be between 1 and {max}, got {n}"),
                );
                None
            }
        },
    };
    Some(RateLimitSpec {
        rate: rate?,
        burst: burst?,
        key: key?,
        max_keys: max_keys?,
    })
}

/// `trusted_proxies = ["10.0.0.0/8", "::1"]`: addresses or networks.
fn check_trusted_proxies(
    path: &str,
    raw: Option<&[String]>,
    report: &mut Report,
) -> Option<Box<[IpNet]>> {
    let raw = raw.unwrap_or_default();
    let mut ok = true;
    let mut nets = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        match parse_net(text) {
            Some(net) => nets.push(net),
            None => {
                report.add(
                    format!("{path}.trusted_proxies[{i}]"),
                    format!("{text:?} is not an IP address or network; write e.g. \"10.0.0.0/8\" or \"::1\""),
                );
                ok = false;
            }
        }
    }
    ok.then(|| nets.into_boxed_slice())
}

/// `"10.0.0.0/8"` or `"10.1.2.3"`; host bits must be zero.
fn parse_net(text: &str) -> Option<IpNet> {
    let (addr, len) = match text.trim().split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l.parse::<u8>().ok()?)),
        None => (text.trim().parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    if len > max {
        return None;
    }
    let net = IpNet { addr, len };
    // Host bits set ("10.0.0.1/8") is most likely a typo: refuse it.
    let zeroed = match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(v4) & mask == u32::from(v4)
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(v6) & mask == u128::from(v6)
        }
    };
    zeroed.then_some(net)
}
