//! One way to take a std mutex: a lock poisoned by a panic while it was held still holds the
//! data, and the exporter goes on with it rather than panicking in turn. Every lock here is
//! held briefly and never across an `.await`.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, poisoned or not.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
