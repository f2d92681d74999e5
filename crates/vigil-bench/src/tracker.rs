//! Loss and duplicate accounting per publisher sequence, with a growable
//! bitset (one bit per sequence number: 1 M messages cost 128 KiB).

/// Counts what one receiver saw of each publisher's sequence.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    seen: Vec<Vec<u64>>,
    received: u64,
    duplicates: u64,
}

impl SeqTracker {
    /// Records `seq` from `publisher`; returns false if it was a duplicate.
    pub fn record(&mut self, publisher: u32, seq: u64) -> bool {
        let p = publisher as usize;
        if self.seen.len() <= p {
            self.seen.resize(p + 1, Vec::new());
        }
        let bits = &mut self.seen[p];
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return false;
        }
        bits[word] |= 1 << bit;
        self.received += 1;
        true
    }

    /// Distinct messages received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Messages received more than once (extra copies).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Messages of `publisher` with seq < `sent` never received.
    pub fn missing(&self, publisher: u32, sent: u64) -> u64 {
        let got = self.seen.get(publisher as usize).map_or(0, |bits| {
            (0..sent)
                .filter(|s| {
                    bits.get((s / 64) as usize)
                        .is_some_and(|w| w & (1 << (s % 64)) != 0)
                })
                .count() as u64
        });
        sent - got
    }

    /// Adds another receiver's counts (for totals across receivers).
    pub fn merge_counts(&mut self, other: &SeqTracker) {
        self.received += other.received;
        self.duplicates += other.duplicates;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_and_duplicates_exactly() {
        let mut t = SeqTracker::default();
        for seq in [0, 1, 2, 4, 4, 200, 1] {
            t.record(3, seq);
        }
        t.record(0, 0);
        assert_eq!(t.received(), 6);
        assert_eq!(t.duplicates(), 2);
        assert_eq!(t.missing(3, 5), 1, "seq 3 of 0..5 never arrived");
        assert_eq!(t.missing(3, 201), 201 - 5);
        assert_eq!(t.missing(1, 10), 10, "an unseen publisher lost everything");
        assert_eq!(t.missing(0, 1), 0);
    }
}
