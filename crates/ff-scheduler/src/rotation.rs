//! The rotation cursor of spec 03 §6.2 step 4: one packed atomic `(epoch, cursor)`.
//!
//! Every `claim_for_worker` call starts probing at its instance's hash plus the
//! cursor. The cursor moves by one probe window the first time a call lands in a
//! new epoch (`now / rotation_window_ms`), so over successive epochs the windows of
//! all instances sweep every partition and none is starved. Packing both values in
//! one word lets a single compare-and-swap decide which caller advances it.

use std::sync::atomic::{AtomicU64, Ordering};

use ff_core::TimestampMs;

/// Bits of the packed word that hold the cursor (a partition index fits in 16).
const CURSOR_BITS: u32 = 16;
/// Mask of the cursor part.
const CURSOR_MASK: u64 = (1 << CURSOR_BITS) - 1;
/// Mask of the epoch part before shifting (48 bits: ms epochs last for millennia).
const EPOCH_MASK: u64 = (1 << (64 - CURSOR_BITS)) - 1;
/// Most compare-and-swap attempts before settling for whatever value is stored.
const CAS_ATTEMPTS_MAX: usize = 64;

/// A packed `(epoch, cursor)` shared by every call of one scheduler.
#[derive(Debug, Default)]
pub(crate) struct RotationCursor {
    packed: AtomicU64,
}

fn pack(epoch: u64, cursor: u16) -> u64 {
    ((epoch & EPOCH_MASK) << CURSOR_BITS) | u64::from(cursor)
}

fn unpack(packed: u64) -> (u64, u16) {
    // The mask keeps the value within 16 bits, so the narrowing is exact.
    (packed >> CURSOR_BITS, (packed & CURSOR_MASK) as u16)
}

/// `(a + b) mod m` without overflow; `m` must be positive.
fn add_mod(a: u16, b: u16, m: u16) -> u16 {
    debug_assert!(m > 0);
    let sum = (u32::from(a) + u32::from(b)) % u32::from(m);
    // A value below `m: u16` fits in u16.
    sum as u16
}

impl RotationCursor {
    /// The cursor for `now`, advancing it by `step` (mod `partitions`) on the first call of a new epoch.
    pub(crate) fn cursor(&self, now: TimestampMs, window_ms: u64, step: u16, partitions: u16) -> u16 {
        debug_assert!(partitions > 0);
        let epoch = (u64::try_from(now).unwrap_or(0) / window_ms.max(1)) & EPOCH_MASK;
        for _ in 0..CAS_ATTEMPTS_MAX {
            let current = self.packed.load(Ordering::Acquire);
            let (stored_epoch, cursor) = unpack(current);
            if stored_epoch == epoch {
                return cursor % partitions;
            }
            let next = add_mod(cursor % partitions, step, partitions);
            if self
                .packed
                .compare_exchange(current, pack(epoch, next), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return next;
            }
        }
        // Heavy contention: another caller has moved the cursor; any stored value is fair.
        unpack(self.packed.load(Ordering::Acquire)).1 % partitions
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn pack_round_trips() {
        for (epoch, cursor) in [(0, 0), (1, 7), (EPOCH_MASK, u16::MAX), (6_942_758_400, 255)] {
            assert_eq!(unpack(pack(epoch, cursor)), (epoch, cursor));
        }
    }

    #[test]
    fn advances_once_per_epoch() {
        let r = RotationCursor::default();
        // First call of the first epoch advances from the initial 0.
        assert_eq!(r.cursor(1000, 250, 32, 256), 32);
        assert_eq!(r.cursor(1249, 250, 32, 256), 32);
        assert_eq!(r.cursor(1250, 250, 32, 256), 64);
        assert_eq!(r.cursor(1499, 250, 32, 256), 64);
        // Skipping epochs advances once, not once per skipped epoch.
        assert_eq!(r.cursor(10_000, 250, 32, 256), 96);
    }

    #[test]
    fn wraps_modulo_partitions() {
        let r = RotationCursor::default();
        let seen: Vec<u16> = (1..6).map(|e| r.cursor(e * 250, 250, 4, 10)).collect();
        assert_eq!(seen, vec![4, 8, 2, 6, 0]);
    }

    #[test]
    fn concurrent_callers_advance_once() {
        let r = Arc::new(RotationCursor::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || r.cursor(5000, 250, 32, 256))
            })
            .collect();
        let seen: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap_or(u16::MAX)).collect();
        assert!(seen.iter().all(|&c| c == 32), "{seen:?}");
    }
}
