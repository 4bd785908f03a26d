//! Checks of the protection settings (`docs/limits.md`): a pool's
//! `retry_budget`, a route's `retry_on_status`. Each reports at its key path and
//! returns `None` on error.

use super::Report;
use crate::control_plane::config::raw::{RawPool, RawRetryBudget};
use crate::control_plane::config::spec::{PoolLimitsSpec, RetryBudgetSpec};

/// Most statuses in `retry_on_status`.
const MAX_RETRY_STATUSES: usize = 16;

/// `retry_budget` of pool `path` (`pools[i]`).
pub(super) fn check_pool_limits(
    path: &str,
    raw: &RawPool,
    report: &mut Report,
) -> Option<PoolLimitsSpec> {
    let retry_budget = match &raw.retry_budget {
        None => Some(None),
        Some(b) => check_retry_budget(&format!("{path}.retry_budget"), b, report).map(Some),
    };
    Some(PoolLimitsSpec {
        retry_budget: retry_budget?,
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
