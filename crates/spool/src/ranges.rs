//! A set of sequence numbers kept as disjoint half-open ranges, so that in-order acks (the
//! common case) cost one entry however many records they cover.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end (exclusive); ranges never touch or overlap.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| seq < end)
    }

    /// Adds `[start, end)`.
    pub fn insert_range(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
        }
        let overlapping: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.ranges.remove(&s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    pub fn insert(&mut self, seq: u64) {
        self.insert_range(seq, seq.saturating_add(1));
    }

    /// Forgets everything below `floor`.
    pub fn remove_below(&mut self, floor: u64) {
        let below: Vec<(u64, u64)> = self.ranges.range(..floor).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in below {
            self.ranges.remove(&s);
            if e > floor {
                self.ranges.insert(floor, e);
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    pub fn len_ranges(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_adjacent_and_overlapping() {
        let mut set = RangeSet::default();
        for seq in [5, 3, 4, 10, 11, 6] {
            set.insert(seq);
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![(3, 7), (10, 12)]);
        set.insert_range(6, 10);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![(3, 12)]);
        assert!(set.contains(3) && set.contains(11) && !set.contains(12) && !set.contains(2));
        set.remove_below(5);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![(5, 12)]);
    }
}
