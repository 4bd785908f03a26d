//! The rollout lease: exactly one replica drives a rollout.
//!
//! The shared document names each rollout's driver (`drivers`) and, beside it,
//! until when the driver's lease holds (`leases`, wall-clock milliseconds). Both
//! are written with the document, so taking or renewing a lease is a
//! compare-and-set like every shared write: two replicas taking the same
//! expired lease at once both write on the same store version, one of them wins
//! and the other's write is refused as stale.
//!
//! - The driver renews its leases when less than [`RENEW_BELOW`] of the term is
//!   left (so about every third of the term, on its poller's read), in one write
//!   for all of them.
//! - Another replica takes a lease only once it has expired (`now >= until`), on
//!   the first read of the store after that: within the term plus one
//!   `poll_interval` plus one write of the driver's last renewal.
//! - A driver (with no lease recorded: written by a build without leases) that
//!   holds no expiry is never taken over, as before.
//! - A step written by a replica that no longer holds the lease is refused
//!   (fencing), so a driver that was only cut off from the store cannot step a
//!   rollout another replica now drives.
//!
//! The arithmetic on times is checked: a term that would overflow the
//! wall-clock milliseconds is an error, not a wrapped expiry.

use std::collections::BTreeMap;
use std::time::Duration;

/// How long a lease holds unless renewed.
pub(crate) const TERM: Duration = Duration::from_secs(5);
/// A lease with less than this share of its term left is renewed (numerator
/// over 3: two thirds).
pub(crate) const RENEW_BELOW: u64 = 2;

/// Why a lease time could not be computed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LeaseError {
    #[error("a lease of {term:?} from {now_ms} ms overflows the clock")]
    Overflow { now_ms: u64, term: Duration },
}

/// Who may drive rollout `id` now, as `me` reads the document.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Nobody drives it: the first replica to write it does.
    Free,
    /// `me` holds it; `renew` says whether it is due for renewal.
    Mine { renew: bool },
    /// Another replica holds it until `until_ms` (`None`: no expiry recorded).
    Held {
        holder: String,
        until_ms: Option<u64>,
    },
    /// Another replica held it and its lease has expired: `me` may take it.
    Expired { holder: String },
}

/// When a lease taken or renewed at `now_ms` for `term` ends.
pub(crate) fn until(now_ms: u64, term: Duration) -> Result<u64, LeaseError> {
    u64::try_from(term.as_millis())
        .ok()
        .and_then(|t| now_ms.checked_add(t))
        .ok_or(LeaseError::Overflow { now_ms, term })
}

/// Whether a lease ending at `until_ms` is due for renewal at `now_ms`: less than
/// [`RENEW_BELOW`] thirds of `term` left.
pub(crate) fn due(until_ms: u64, now_ms: u64, term: Duration) -> bool {
    let term_ms = u64::try_from(term.as_millis()).unwrap_or(u64::MAX);
    let left = until_ms.saturating_sub(now_ms);
    // left < term * 2/3, without overflow: 3 * left < 2 * term.
    left.saturating_mul(3) < term_ms.saturating_mul(RENEW_BELOW)
}

/// What `me` may do with rollout `id`, given the document's drivers and leases.
pub(crate) fn claim(
    drivers: &BTreeMap<String, String>,
    leases: &BTreeMap<String, u64>,
    id: &str,
    me: &str,
    now_ms: u64,
    term: Duration,
) -> Claim {
    let Some(holder) = drivers.get(id) else {
        return Claim::Free;
    };
    let until_ms = leases.get(id).copied();
    if holder == me {
        return Claim::Mine {
            renew: until_ms.is_none_or(|u| due(u, now_ms, term)),
        };
    }
    match until_ms {
        Some(u) if now_ms >= u => Claim::Expired {
            holder: holder.clone(),
        },
        _ => Claim::Held {
            holder: holder.clone(),
            until_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(
        holder: &str,
        until_ms: Option<u64>,
    ) -> (BTreeMap<String, String>, BTreeMap<String, u64>) {
        let drivers = BTreeMap::from([("r-1".to_owned(), holder.to_owned())]);
        let leases = until_ms
            .map(|u| BTreeMap::from([("r-1".to_owned(), u)]))
            .unwrap_or_default();
        (drivers, leases)
    }

    #[test]
    fn expiry_arithmetic_is_checked() {
        assert_eq!(until(1_000, TERM), Ok(6_000));
        assert_eq!(
            until(u64::MAX - 10, TERM),
            Err(LeaseError::Overflow {
                now_ms: u64::MAX - 10,
                term: TERM
            })
        );
        assert!(until(0, Duration::MAX).is_err());
        // Renewal falls due once less than two thirds of the term is left.
        assert!(!due(6_000, 1_000, TERM));
        assert!(!due(6_000, 2_666, TERM));
        assert!(due(6_000, 2_668, TERM));
        assert!(due(6_000, 9_000, TERM), "an expired lease is due");
        assert!(!due(u64::MAX, 0, Duration::MAX), "no overflow");
    }

    #[test]
    fn only_an_expired_lease_is_taken_over() {
        let (d, l) = doc("a", Some(6_000));
        assert_eq!(
            claim(&d, &l, "r-1", "b", 5_999, TERM),
            Claim::Held {
                holder: "a".into(),
                until_ms: Some(6_000)
            }
        );
        assert_eq!(
            claim(&d, &l, "r-1", "b", 6_000, TERM),
            Claim::Expired { holder: "a".into() }
        );
        assert_eq!(
            claim(&d, &l, "r-1", "a", 2_000, TERM),
            Claim::Mine { renew: false }
        );
        assert_eq!(
            claim(&d, &l, "r-1", "a", 5_000, TERM),
            Claim::Mine { renew: true }
        );
        assert_eq!(claim(&d, &l, "r-2", "b", 0, TERM), Claim::Free);
        // A driver recorded without a lease (an older build) is never taken over.
        let (d, l) = doc("a", None);
        assert_eq!(
            claim(&d, &l, "r-1", "b", u64::MAX, TERM),
            Claim::Held {
                holder: "a".into(),
                until_ms: None
            }
        );
        assert_eq!(
            claim(&d, &l, "r-1", "a", 0, TERM),
            Claim::Mine { renew: true }
        );
    }

    #[test]
    fn a_takeover_lands_within_the_term_after_the_last_renewal() {
        // The driver renews whenever due, on reads 250 ms apart, then dies at
        // 10 s; a peer reading every 250 ms takes over at the first read at or
        // after the expiry: within the term plus one read interval.
        let (read, die) = (250u64, 10_000u64);
        let mut lease = until(0, TERM).unwrap();
        let mut t = 0;
        while t < die {
            if due(lease, t, TERM) {
                lease = until(t, TERM).unwrap();
            }
            t += read;
        }
        let last_renewal = lease - 5_000;
        let (d, l) = doc("a", Some(lease));
        let mut t = die;
        while !matches!(claim(&d, &l, "r-1", "b", t, TERM), Claim::Expired { .. }) {
            t += read;
        }
        assert!(
            t - last_renewal <= 5_000 + read,
            "taken at {t}, renewed {last_renewal}"
        );
        assert!(t >= lease, "never before the expiry");
    }
}
