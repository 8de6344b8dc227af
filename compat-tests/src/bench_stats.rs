//! What the request-rate benchmarks (`bench`, `zk_bench`) share: a cheap deterministic
//! picker of keys or nodes, one per client task, and nearest-rank percentiles.

use std::time::Duration;

/// A small, fast, deterministic index picker (xorshift64*); seed it per client task.
#[derive(Debug, Clone)]
pub struct Picker(pub u64);

impl Picker {
    /// An index below `len` (which must be positive).
    pub fn next(&mut self, len: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let mixed = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // Truncation is intended: the length fits in usize and the result is below it.
        (mixed % len as u64) as usize
    }
}

/// The nearest-rank `pct`th percentile of `sorted` (ascending, not empty).
pub fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99), Duration::from_millis(99));
        assert_eq!(
            percentile(&[Duration::from_millis(7)], 99),
            Duration::from_millis(7)
        );
    }

    #[test]
    fn picker_stays_in_range_and_spreads() {
        let mut picker = Picker(42);
        let mut seen = vec![false; 10];
        for _ in 0..1000 {
            seen[picker.next(10)] = true;
        }
        assert!(seen.iter().all(|hit| *hit), "{seen:?}");
    }
}
