//! Questions servers ask during a call (`elicitation/create`, the 2025-11-25 era): a call that
//! can take them registers a sink under its connection's link number while it runs, and the
//! connection's handler passes each question to the sink of the one call in flight on that
//! connection. The request names no call, so when several calls that could be asking run on one
//! connection the question goes to nobody and is answered `cancel`: a person never sees another
//! person's question.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::elicitation::Question;

/// Where a call's questions go: answers with the result the server is sent (`{action, content}`).
pub type AskSink = Arc<dyn Fn(Question) -> BoxFuture<'static, Value> + Send + Sync>;

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The sinks of the calls running on each connection (by link number), each with its number.
type Routes = HashMap<u64, Vec<(u64, AskSink)>>;

static ROUTES: LazyLock<Mutex<Routes>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Registered while alive.
pub struct Registration {
    link: u64,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = crate::sync::lock_unpoisoned(&ROUTES);
        if let Some(sinks) = routes.get_mut(&self.link) {
            sinks.retain(|(id, _)| *id != self.id);
            if sinks.is_empty() {
                routes.remove(&self.link);
            }
        }
    }
}

/// Sends the questions asked on this connection to `sink` until dropped.
pub fn register(link: u64, sink: AskSink) -> Registration {
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::sync::lock_unpoisoned(&ROUTES)
        .entry(link)
        .or_default()
        .push((id, sink));
    Registration { link, id }
}

/// The answer to a question asked on this connection: from the one call that can take it, or
/// `cancel` when none or several could.
pub fn ask(link: u64, question: Question) -> BoxFuture<'static, Value> {
    let sink = {
        let routes = crate::sync::lock_unpoisoned(&ROUTES);
        match routes.get(&link).map(Vec::as_slice) {
            Some([(_, sink)]) => Some(Arc::clone(sink)),
            _ => None,
        }
    };
    match sink {
        Some(sink) => sink(question),
        None => {
            tracing::warn!(
                link,
                "an MCP server asked a question no single call can take (none or several in flight on its connection): cancel"
            );
            Box::pin(async { json!({"action": "cancel"}) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question() -> Question {
        Question::from_params("elicitation", &json!({"message": "?"})).expect("a question")
    }

    fn answering(action: &'static str) -> AskSink {
        Arc::new(move |_| Box::pin(async move { json!({"action": action}) }))
    }

    #[actix_rt::test]
    async fn a_question_reaches_the_one_call_of_its_connection_and_never_a_guess() {
        let link = crate::mcp::progress::new_link();
        assert_eq!(ask(link, question()).await["action"], "cancel", "nobody listens");
        let first = register(link, answering("accept"));
        assert_eq!(ask(link, question()).await["action"], "accept");
        let second = register(link, answering("decline"));
        assert_eq!(
            ask(link, question()).await["action"],
            "cancel",
            "two calls could be asking"
        );
        drop(first);
        assert_eq!(ask(link, question()).await["action"], "decline");
        drop(second);
        assert_eq!(ask(link, question()).await["action"], "cancel");
    }
}
