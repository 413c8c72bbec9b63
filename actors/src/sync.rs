//! Small synchronisation helpers the actors share.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking over the data when a holder panicked: every mutex here guards counters
/// and maps that stay consistent between statements, so the data is still good.
pub fn lock_unpoisoned<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A value that is read often and replaced rarely (settings a reload changes): readers take the
/// current `Arc`, a writer swaps in a new one. Clones share the value.
#[derive(Debug)]
pub struct Shared<T>(std::sync::Arc<std::sync::RwLock<std::sync::Arc<T>>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(std::sync::Arc::clone(&self.0))
    }
}

impl<T> Shared<T> {
    /// Shares `value`.
    pub fn new(value: T) -> Self {
        Self(std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(value))))
    }

    /// The current value.
    pub fn get(&self) -> std::sync::Arc<T> {
        std::sync::Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the value; readers see it from their next `get`.
    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = std::sync::Arc::new(value);
    }
}
