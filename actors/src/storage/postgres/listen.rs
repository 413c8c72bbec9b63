//! The `LISTEN` side of the cluster: a plain thread with its own connection that waits for other
//! nodes' notices (`aichat_events`, `aichat_cancel`, `aichat_answer`) and hands them on. A lost connection is opened
//! again with a back-off (counted in `aichat_notify_reconnects_total`), after which a
//! `Reconnected` notice tells readers to look in the tables for what they may have missed.

use std::time::Duration;

use fallible_iterator::FallibleIterator;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{ANSWER_CHANNEL, CANCEL_CHANNEL, EVENTS_CHANNEL};
use crate::ids::StreamId;
use crate::storage::Notice;

/// How long one wait for notices lasts before the connection is checked.
const WAIT: Duration = Duration::from_secs(5);

/// The first pause after a lost connection.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the listener thread.
pub(super) fn spawn(config: postgres::Config, tls: MakeRustlsConnect, on_notice: impl Fn(Notice) + Send + 'static) {
    let started = std::thread::Builder::new()
        .name("aichat-listen".into())
        .spawn(move || listen_forever(&config, &tls, &on_notice));
    if let Err(err) = started {
        tracing::error!(error = %err, "could not start the PostgreSQL listener thread");
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the listener's own plain thread: sleeping there blocks no arbiter"
)]
fn listen_forever(config: &postgres::Config, tls: &MakeRustlsConnect, on_notice: &dyn Fn(Notice)) {
    let mut backoff = FIRST_BACKOFF;
    let mut connected_before = false;
    loop {
        let mut listened = false;
        let Err(err) = listen_once(config, tls, on_notice, connected_before, &mut listened);
        if listened {
            connected_before = true;
            backoff = FIRST_BACKOFF;
        }
        tracing::warn!(error = %err, "the PostgreSQL listener has no connection; reconnecting");
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: `LISTEN`, then hand on notices until the connection fails.
fn listen_once(
    config: &postgres::Config,
    tls: &MakeRustlsConnect,
    on_notice: &dyn Fn(Notice),
    connected_before: bool,
    listened: &mut bool,
) -> Result<std::convert::Infallible, postgres::Error> {
    let mut client = config.connect(tls.clone())?;
    client.batch_execute(&format!(
        "LISTEN {EVENTS_CHANNEL}; LISTEN {CANCEL_CHANNEL}; LISTEN {ANSWER_CHANNEL};"
    ))?;
    *listened = true;
    if connected_before {
        metrics::counter!("aichat_notify_reconnects_total").increment(1);
        tracing::info!("the PostgreSQL listener is back");
        on_notice(Notice::Reconnected);
    }
    loop {
        {
            let mut notifications = client.notifications();
            let mut waiting = notifications.timeout_iter(WAIT);
            while let Some(notification) = waiting.next()? {
                if let Some(notice) = parse(notification.channel(), notification.payload()) {
                    on_notice(notice);
                }
            }
        }
        // Quiet for a while: make sure the connection still answers.
        client.simple_query("SELECT 1")?;
    }
}

/// A notice from its channel and payload; `None` for anything else.
fn parse(channel: &str, payload: &str) -> Option<Notice> {
    match channel {
        EVENTS_CHANNEL => {
            let mut parts = payload.rsplitn(3, ':');
            let at_micros = parts.next()?.parse().ok()?;
            let seq = parts.next()?.parse().ok()?;
            let stream_id = StreamId::from_raw(parts.next()?.to_owned());
            Some(Notice::Events {
                stream_id,
                seq,
                at_micros,
            })
        }
        CANCEL_CHANNEL => Some(Notice::Cancel {
            stream_id: StreamId::from_raw(payload.to_owned()),
        }),
        ANSWER_CHANNEL => {
            let (stream_id, request_id) = payload.split_once(' ')?;
            Some(Notice::Answer {
                stream_id: StreamId::from_raw(stream_id.to_owned()),
                request_id: request_id.to_owned(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_read_from_their_payloads() {
        assert_eq!(
            parse(EVENTS_CHANNEL, "stream_ab:c:12:1700000000000000"),
            Some(Notice::Events {
                stream_id: StreamId::from_raw("stream_ab:c"),
                seq: 12,
                at_micros: 1_700_000_000_000_000,
            })
        );
        assert_eq!(
            parse(CANCEL_CHANNEL, "s1"),
            Some(Notice::Cancel {
                stream_id: StreamId::from_raw("s1")
            })
        );
        assert_eq!(
            parse(ANSWER_CHANNEL, "stream_1 elicitation_2"),
            Some(Notice::Answer {
                stream_id: StreamId::from_raw("stream_1"),
                request_id: "elicitation_2".into(),
            })
        );
        assert_eq!(parse(ANSWER_CHANNEL, "no-space"), None);
        assert_eq!(parse(EVENTS_CHANNEL, "no-numbers"), None);
        assert_eq!(parse("other", "x"), None);
    }
}
