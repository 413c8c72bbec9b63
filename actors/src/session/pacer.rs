//! Pacing of tool progress: each call's notices reach readers at most once per interval; a
//! notice that comes sooner waits (a newer one replaces it) and goes out when its call's interval
//! has passed, or when the calls end (the newest notice each call had sent by then).

use std::time::{Duration, Instant};

use crate::tools::ProgressNote;

/// Per call: when its last notice went out, and the one waiting.
pub(crate) struct ProgressPacer {
    every: Duration,
    sent: Vec<Option<Instant>>,
    waiting: Vec<Option<ProgressNote>>,
}

impl ProgressPacer {
    /// A pacer for `calls` calls.
    pub(crate) fn new(calls: usize, every: Duration) -> Self {
        Self {
            every,
            sent: vec![None; calls],
            waiting: vec![None; calls],
        }
    }

    /// A notice of call `i`: returned when it may go out now, else kept for later.
    pub(crate) fn offer(&mut self, i: usize, note: ProgressNote, now: Instant) -> Option<ProgressNote> {
        let sent = self.sent.get_mut(i)?;
        if sent.is_none_or(|at| now.duration_since(at) >= self.every) {
            *sent = Some(now);
            self.waiting[i] = None;
            return Some(note);
        }
        self.waiting[i] = Some(note);
        None
    }

    /// Keeps a notice of call `i` for [`Self::drain`] (the newest wins).
    pub(crate) fn keep(&mut self, i: usize, note: ProgressNote) {
        if let Some(waiting) = self.waiting.get_mut(i) {
            *waiting = Some(note);
        }
    }

    /// When the next kept notice may go out.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.waiting
            .iter()
            .zip(&self.sent)
            .filter(|(waiting, _)| waiting.is_some())
            .filter_map(|(_, sent)| sent.map(|at| at + self.every))
            .min()
    }

    /// The kept notices whose interval has passed (they count as sent now).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(usize, ProgressNote)> {
        let mut out = Vec::new();
        for i in 0..self.waiting.len() {
            let ready = self.sent[i].is_none_or(|at| now.duration_since(at) >= self.every);
            if ready && let Some(note) = self.waiting[i].take() {
                self.sent[i] = Some(now);
                out.push((i, note));
            }
        }
        out
    }

    /// Every kept notice (the calls ended).
    pub(crate) fn drain(&mut self) -> Vec<(usize, ProgressNote)> {
        self.waiting
            .iter_mut()
            .enumerate()
            .filter_map(|(i, w)| w.take().map(|note| (i, note)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(progress: f64) -> ProgressNote {
        ProgressNote {
            progress,
            total: None,
            message: None,
        }
    }

    #[test]
    fn notices_are_paced_per_call_and_the_last_word_is_kept() {
        let start = Instant::now();
        let every = Duration::from_millis(250);
        let mut pacer = ProgressPacer::new(2, every);
        assert_eq!(pacer.offer(0, note(1.0), start), Some(note(1.0)));
        assert_eq!(
            pacer.offer(1, note(1.0), start),
            Some(note(1.0)),
            "calls are paced apart"
        );
        let soon = start + Duration::from_millis(10);
        assert_eq!(pacer.offer(0, note(2.0), soon), None);
        assert_eq!(
            pacer.offer(0, note(3.0), soon),
            None,
            "a newer notice replaces the waiting one"
        );
        assert_eq!(pacer.next_due(), Some(start + every));
        assert!(pacer.due(soon).is_empty());
        assert_eq!(pacer.due(start + every), vec![(0, note(3.0))]);
        assert_eq!(pacer.next_due(), None);
        assert_eq!(
            pacer.offer(1, note(2.0), start + every - Duration::from_millis(1)),
            None
        );
        assert_eq!(pacer.drain(), vec![(1, note(2.0))]);
        assert!(pacer.drain().is_empty());
    }
}
