//! A concurrency limit that fails fast: when every slot is taken, a call is refused at once
//! instead of queueing, so a slow service cannot pile up unbounded work in the caller.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ConfigError, ensure};

#[derive(Debug, Clone)]
pub struct Bulkhead {
    slots: Arc<Semaphore>,
    capacity: usize,
}

/// Refused: every slot is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("all {capacity} concurrent call slots are in use")]
pub struct Overloaded {
    pub capacity: usize,
}

/// A held slot, released when dropped.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Bulkhead {
    pub fn new(capacity: usize) -> Result<Self, ConfigError> {
        ensure((1..=Semaphore::MAX_PERMITS).contains(&capacity), "max_concurrent_calls", "must be at least 1")?;
        Ok(Self { slots: Arc::new(Semaphore::new(capacity)), capacity })
    }

    pub fn try_acquire(&self) -> Result<Slot, Overloaded> {
        Arc::clone(&self.slots).try_acquire_owned().map(Slot).map_err(|_| Overloaded { capacity: self.capacity })
    }

    pub fn in_flight(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_at_capacity_and_frees_on_drop() {
        let bulkhead = Bulkhead::new(2).unwrap();
        let a = bulkhead.try_acquire().unwrap();
        let _b = bulkhead.try_acquire().unwrap();
        assert_eq!(bulkhead.try_acquire().unwrap_err(), Overloaded { capacity: 2 });
        assert_eq!(bulkhead.in_flight(), 2);
        drop(a);
        assert!(bulkhead.try_acquire().is_ok());
        assert!(Bulkhead::new(0).is_err());
    }
}
