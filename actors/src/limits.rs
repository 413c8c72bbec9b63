//! Per-user limits: turns running at once (counted from the live streams), turns started per
//! minute (a token bucket per user), and SSE streams read at once. All answer 429.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::ids::UserId;
use crate::session::SessionError;
use crate::stream::StreamHub;

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// The limits and the per-user buckets.
pub struct TurnLimits {
    max_running: AtomicUsize,
    per_minute: AtomicU32,
    buckets: Mutex<HashMap<UserId, Bucket>>,
}

impl TurnLimits {
    /// Limits; 0 disables one.
    pub fn new(max_running: usize, per_minute: u32) -> Self {
        Self {
            max_running: AtomicUsize::new(max_running),
            per_minute: AtomicU32::new(per_minute),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// New limits (a reload); turns already running are not affected.
    pub fn set(&self, max_running: usize, per_minute: u32) {
        self.max_running.store(max_running, Ordering::Relaxed);
        self.per_minute.store(per_minute, Ordering::Relaxed);
    }

    /// Takes one turn from the user's allowance, or says how long to wait.
    pub fn admit(&self, user: UserId, hub: &StreamHub) -> Result<(), SessionError> {
        let max_running = self.max_running.load(Ordering::Relaxed);
        if max_running > 0 && hub.running_for(user) >= max_running {
            return Err(SessionError::TooManyTurns {
                reason: "too many turns running at once",
                retry_after: 1,
            });
        }
        let per_minute = self.per_minute.load(Ordering::Relaxed);
        if per_minute == 0 {
            return Ok(());
        }
        let rate = f64::from(per_minute) / 60.0;
        let capacity = f64::from(per_minute);
        let mut buckets = crate::sync::lock_unpoisoned(&self.buckets);
        let now = Instant::now();
        let bucket = buckets.entry(user).or_insert(Bucket {
            tokens: capacity,
            refilled: now,
        });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.refilled).as_secs_f64() * rate).min(capacity);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / rate).ceil().max(1.0);
        Err(SessionError::TooManyTurns {
            reason: "too many turns this minute",
            retry_after: wait as u64,
        })
    }
}

/// How many streams each user reads at once, and the cap.
pub struct ReaderLimits {
    max: usize,
    open: Mutex<HashMap<UserId, usize>>,
}

/// One open stream reader of a user; dropping it frees the place.
pub struct ReaderPermit {
    limits: Arc<ReaderLimits>,
    user: UserId,
}

impl ReaderLimits {
    /// At most `max` streams read at once per user.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more reader of `user`, or `TooManyStreams`.
    pub fn admit(self: &Arc<Self>, user: UserId) -> Result<ReaderPermit, SessionError> {
        let mut open = crate::sync::lock_unpoisoned(&self.open);
        let count = open.entry(user).or_insert(0);
        if *count >= self.max {
            return Err(SessionError::TooManyStreams { limit: self.max });
        }
        *count += 1;
        Ok(ReaderPermit {
            limits: Arc::clone(self),
            user,
        })
    }
}

impl Drop for ReaderPermit {
    fn drop(&mut self) {
        let mut open = crate::sync::lock_unpoisoned(&self.limits.open);
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}
