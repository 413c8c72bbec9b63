//! Small synchronisation helpers the actors share.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking over the data when a holder panicked: every mutex here guards counters
/// and maps that stay consistent between statements, so the data is still good.
pub fn lock_unpoisoned<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
