//! Weighted random draws in O(1): Walker's alias method (Vose's construction).
//!
//! Built once at snapshot time from the backends' weights, then each draw is two
//! random numbers and one table read, whatever the pool size. It is exact: weights are
//! integers and so is the table (each of the `n` columns holds `Σ w` units, split
//! between its own backend and one alias), so backend `i` is drawn with probability
//! exactly `w_i / Σ w`. Used by `least_conn` to sample candidates in large pools.
//!
//! It knows nothing about eligibility or load; the caller skips what it cannot use.

use crate::data_plane::backend::Backend;

/// One column per backend: draws landing in it below `own` pick the column's backend,
/// the rest pick `alias`.
#[derive(Debug)]
pub(super) struct AliasTable {
    columns: Box<[Column]>,
    /// Units per column: `Σ w`.
    total: u64,
}

#[derive(Clone, Copy, Debug)]
struct Column {
    own: u64,
    alias: u32,
}

impl AliasTable {
    /// The table for `backends`' weights (0 counts as 1); `None` for an empty slice.
    pub(super) fn build(backends: &[Backend]) -> Option<AliasTable> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let total: u64 = backends.iter().map(|b| u64::from(b.weight.max(1))).sum();
        // Scaled so a column is `total` units: backend i brings w_i × n of them.
        // ≤ 10^6 × 2^32 < 2^63: no overflow.
        let mut units: Vec<u64> = backends
            .iter()
            .map(|b| u64::from(b.weight.max(1)) * n as u64)
            .collect();
        let mut columns = vec![
            Column {
                own: total,
                alias: 0
            };
            n
        ];
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| units[i] < total);
        // Vose: fill each under-full column with the rest from an over-full one.
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            columns[s] = Column {
                own: units[s],
                alias: u32::try_from(l).expect("pool holds fewer than 2^32 backends"),
            };
            units[l] -= total - units[s];
            if units[l] < total {
                large.pop();
                small.push(l);
            }
        }
        // What is left is exactly full (integer arithmetic: no rounding leftovers);
        // those columns keep `own = total` and never use their alias.
        Some(AliasTable {
            columns: columns.into_boxed_slice(),
            total,
        })
    }

    /// How many backends the table was built for.
    pub(super) fn len(&self) -> usize {
        self.columns.len()
    }

    /// A random index, `i` with probability `w_i / Σ w`.
    #[inline]
    pub(super) fn draw(&self) -> usize {
        let i = fastrand::usize(..self.columns.len());
        let column = self.columns[i];
        if fastrand::u64(..self.total) < column.own {
            i
        } else {
            column.alias as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_backends;
    use super::*;

    #[test]
    fn alias_columns_hold_exactly_each_weight() {
        // Units per backend over all columns, own parts plus aliases, must be w_i × n.
        let weights = [1, 3, 7, 1, 2, 1_000_000, 5];
        let backends = test_backends(&weights);
        let table = AliasTable::build(&backends).unwrap();
        let mut units = vec![0u64; weights.len()];
        for (i, c) in table.columns.iter().enumerate() {
            units[i] += c.own;
            units[c.alias as usize] += table.total - c.own;
        }
        for (i, &w) in weights.iter().enumerate() {
            assert_eq!(units[i], u64::from(w) * weights.len() as u64, "backend {i}");
        }
    }

    #[test]
    fn alias_draws_follow_weights() {
        // Weights 1 : 2 : 5 over 80 000 draws → 10 000 / 20 000 / 50 000, each ±3 %
        // (σ ≤ 141).
        fastrand::seed(12);
        let backends = test_backends(&[1, 2, 5]);
        let table = AliasTable::build(&backends).unwrap();
        let mut counts = [0u32; 3];
        for _ in 0..80_000 {
            counts[table.draw()] += 1;
        }
        for (c, want) in counts.iter().zip([10_000, 20_000, 50_000]) {
            assert!(c.abs_diff(want) * 100 <= want * 3, "{counts:?}");
        }
        assert!(AliasTable::build(&[]).is_none());
    }
}
