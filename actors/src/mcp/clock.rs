//! `CallClock`: the time limit of one tool call. The call may stay silent for `limit`; each
//! progress notice starts that wait again, and the clock stands still while the server waits on
//! the person's answer to its question (a person takes longer than a tool). Past ten limits of
//! running time the call ends whatever its progress.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// One call's clock.
pub struct CallClock {
    limit: Duration,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    /// Silent until then at most.
    deadline: Instant,
    /// Running until then at most (moved on by the time spent asking).
    hard_deadline: Instant,
    /// Questions being asked now.
    asking: u32,
    /// When the first of them was asked.
    asked_at: Option<Instant>,
}

impl CallClock {
    /// A clock started now.
    pub fn start(limit: Duration) -> Self {
        let now = Instant::now();
        Self {
            limit,
            state: Mutex::new(State {
                deadline: now + limit,
                hard_deadline: now + limit.saturating_mul(10),
                asking: 0,
                asked_at: None,
            }),
            changed: Notify::new(),
        }
    }

    /// The server said how far it got: the silent wait starts again.
    pub fn progressed(&self) {
        crate::sync::lock_unpoisoned(&self.state).deadline = Instant::now() + self.limit;
        self.changed.notify_waiters();
    }

    /// The server asked the person something: the clock stands still until [`Self::answered`].
    pub fn asking(&self) {
        let mut state = crate::sync::lock_unpoisoned(&self.state);
        state.asking += 1;
        state.asked_at.get_or_insert_with(Instant::now);
        drop(state);
        self.changed.notify_waiters();
    }

    /// The question has its answer: the clock runs again, from a full limit.
    pub fn answered(&self) {
        let now = Instant::now();
        let mut state = crate::sync::lock_unpoisoned(&self.state);
        state.asking = state.asking.saturating_sub(1);
        if state.asking == 0
            && let Some(asked_at) = state.asked_at.take()
        {
            state.hard_deadline += now - asked_at;
            state.deadline = now + self.limit;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Resolves when the call has run out of time.
    pub async fn expired(&self) {
        loop {
            let changed = self.changed.notified();
            let wake = {
                let state = crate::sync::lock_unpoisoned(&self.state);
                (state.asking == 0).then(|| state.deadline.min(state.hard_deadline))
            };
            match wake {
                None => changed.await,
                Some(at) if at <= Instant::now() => return,
                Some(at) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_ends_a_call_progress_extends_it_and_a_question_stops_the_clock() {
        let clock = CallClock::start(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(8)).await;
        clock.progressed();
        let started = Instant::now();
        clock.expired().await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(10),
            "a full limit after the progress"
        );

        let clock = CallClock::start(Duration::from_secs(10));
        clock.asking();
        let waiting = clock.expired();
        tokio::pin!(waiting);
        tokio::select! {
            () = &mut waiting => panic!("the clock ran while the person was asked"),
            () = tokio::time::sleep(Duration::from_secs(3_600)) => {}
        }
        clock.answered();
        let started = Instant::now();
        waiting.await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_never_outlasts_ten_limits() {
        let clock = CallClock::start(Duration::from_secs(1));
        let started = Instant::now();
        let ticking = async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                clock.progressed();
            }
        };
        tokio::select! {
            () = clock.expired() => {}
            () = ticking => {}
        }
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
