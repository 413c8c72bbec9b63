//! The provider actor: one per configured LLM provider. It owns its adapter (a [`ChatProvider`])
//! and serves many streams at once: each `StreamCompletion` is spawned as its own task on the
//! provider arbiter and feeds the caller's channel, so the mailbox is never held for the length of
//! a stream.
//!
//! A stream that panics or fails fatally fails alone and stops the actor; its `Supervisor`
//! restarts it with a fresh adapter for the next requests, while the streams already running go
//! on to their end.

mod anthropic;
pub mod config;
mod error;
pub mod factory;
mod gemini;
mod http;
mod mock;
mod ollama;
mod openai;
mod router;
pub mod wire;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

use crate::backlog::Queued;
use crate::model::{ChatMessage, ToolCall, Usage};
use crate::tools::ToolSpec;

pub use config::{HttpProviderConfig, ProviderKind, Vendor};
pub use error::ProviderError;
pub use http::HttpProvider;
pub use mock::MockProvider;
pub use router::{ProviderStatus, Providers};

/// Why the model is being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A chat turn.
    Chat,
    /// A short title for a new session (no tools).
    Title,
}

/// One model call: the context and the tools it may call.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    /// The context, system prompt first when there is one; shared with the session's history, so
    /// building a request copies pointers, not messages.
    pub messages: Vec<Arc<ChatMessage>>,
    /// The tools offered.
    pub tools: Arc<Vec<ToolSpec>>,
    /// Why the model is called.
    pub purpose: Purpose,
}

/// One item of a model's streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderEvent {
    /// A text delta.
    Text(String),
    /// Tool calls, complete (adapters assemble fragments first).
    ToolCalls(Vec<ToolCall>),
    /// Token usage.
    Usage(Usage),
    /// The answer is complete.
    Done,
}

/// A vendor adapter. Implement streaming once; everything else is built on it.
pub trait ChatProvider: Send + Sync + 'static {
    /// Starts the model call; the stream ends after `Done` or an error.
    fn stream(&self, request: CompletionRequest) -> BoxStream<'static, Result<ProviderEvent, ProviderError>>;
}

/// Builds a provider's adapter; called at start and on every restart (fresh state).
pub type ProviderFactory = Arc<dyn Fn() -> Arc<dyn ChatProvider> + Send + Sync>;

/// The channel a stream's events are delivered on.
pub type EventSink = mpsc::Sender<Result<ProviderEvent, ProviderError>>;

/// Starts a model call whose events go to `sink`; replies as soon as the call is spawned.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StreamCompletion {
    /// The call.
    pub request: CompletionRequest,
    /// Where the events go; dropping the receiver aborts the call.
    pub sink: EventSink,
    /// Counts the message in the backlog until the actor has taken it.
    pub queued: Queued,
}

/// The provider actor.
pub struct ProviderActor {
    name: String,
    factory: ProviderFactory,
    adapter: Arc<dyn ChatProvider>,
    in_flight: Arc<AtomicUsize>,
}

impl ProviderActor {
    fn new(name: String, factory: ProviderFactory, in_flight: Arc<AtomicUsize>) -> Self {
        let adapter = factory();
        Self {
            name,
            factory,
            adapter,
            in_flight,
        }
    }
}

/// Counts a stream in flight while it lives (dropped when the stream ends or is aborted).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Actor for ProviderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Supervised for ProviderActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(provider = %self.name, "provider actor restarting with a fresh adapter");
        self.adapter = (self.factory)();
    }
}

/// How a spawned stream ended, as far as the actor's health is concerned.
enum StreamEnd {
    Normal,
    Fatal,
}

async fn forward(mut stream: BoxStream<'static, Result<ProviderEvent, ProviderError>>, sink: EventSink) -> StreamEnd {
    while let Some(item) = stream.next().await {
        let fatal = matches!(item, Err(ProviderError::Fatal(_)));
        let last = matches!(item, Ok(ProviderEvent::Done) | Err(_));
        if sink.send(item).await.is_err() {
            // The turn went away: dropping the stream aborts the upstream call.
            return StreamEnd::Normal;
        }
        if fatal {
            return StreamEnd::Fatal;
        }
        if last {
            break;
        }
    }
    StreamEnd::Normal
}

/// A stream of this actor's adapter failed fatally or panicked: the adapter is replaced.
#[derive(Message)]
#[rtype(result = "()")]
struct AdapterFailed;

impl Handler<StreamCompletion> for ProviderActor {
    type Result = ();

    fn handle(&mut self, msg: StreamCompletion, ctx: &mut Self::Context) {
        let sink = msg.sink;
        let panic_sink = sink.clone();
        let adapter = Arc::clone(&self.adapter);
        let in_flight = InFlight::new(&self.in_flight);
        let work = AssertUnwindSafe(async move {
            let _in_flight = in_flight;
            forward(adapter.stream(msg.request), sink).await
        })
        .catch_unwind();
        let (actor, name) = (ctx.address(), self.name.clone());
        // Each stream is its own task on the provider arbiter, not a future of this actor: when
        // the actor restarts (a fatal error or a panic of another stream), the streams it already
        // carries go on with the adapter they started on.
        actix_rt::spawn(async move {
            let end = match work.await {
                Ok(end) => end,
                Err(_) => {
                    tracing::error!(provider = %name, "provider stream panicked");
                    let _ = panic_sink.try_send(Err(ProviderError::Crashed));
                    StreamEnd::Fatal
                }
            };
            if matches!(end, StreamEnd::Fatal) {
                actor.do_send(AdapterFailed);
            }
        });
    }
}

impl Handler<AdapterFailed> for ProviderActor {
    type Result = ();

    fn handle(&mut self, _: AdapterFailed, ctx: &mut Self::Context) {
        // The supervisor restarts the actor with a fresh adapter.
        ctx.stop();
    }
}

/// The handle sessions use to reach one provider.
#[derive(Clone)]
pub struct ProviderHandle {
    name: Arc<str>,
    addr: Addr<ProviderActor>,
    in_flight: Arc<AtomicUsize>,
    reads_pdf: bool,
}

impl ProviderHandle {
    /// Starts a supervised provider actor on the given arbiter.
    pub fn start(name: &str, factory: ProviderFactory, arbiter: &ArbiterHandle) -> Self {
        let actor_name = name.to_owned();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&in_flight);
        let addr = Supervisor::start_in_arbiter(arbiter, move |_| ProviderActor::new(actor_name, factory, counter));
        Self {
            name: name.into(),
            addr,
            in_flight,
            reads_pdf: true,
        }
    }

    /// Marks a provider whose API reads no PDF documents (attachments of that kind are refused).
    pub fn without_pdf(mut self) -> Self {
        self.reads_pdf = false;
        self
    }

    /// Whether it can be given PDF attachments.
    pub fn reads_pdf(&self) -> bool {
        self.reads_pdf
    }

    /// The provider's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Model calls streaming right now (an aborted call leaves this count at once).
    pub fn streams_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Starts a model call; events arrive on the returned channel. Dropping it aborts the call.
    pub fn stream(&self, request: CompletionRequest) -> mpsc::Receiver<Result<ProviderEvent, ProviderError>> {
        let (sink, events) = mpsc::channel(64);
        // `do_send` never waits on a full mailbox; if the actor is gone the sink is dropped and the
        // caller sees the channel close without `Done`.
        self.addr.do_send(StreamCompletion {
            request,
            sink,
            queued: Queued::enter("provider"),
        });
        events
    }

    /// A whole answer as text, for short calls like titles.
    pub async fn complete(&self, request: CompletionRequest, timeout: Duration) -> Result<String, ProviderError> {
        let mut events = self.stream(request);
        let collect = async {
            let mut text = String::new();
            while let Some(event) = events.recv().await {
                match event? {
                    ProviderEvent::Text(delta) => text.push_str(&delta),
                    ProviderEvent::Done => return Ok(text),
                    ProviderEvent::ToolCalls(_) | ProviderEvent::Usage(_) => {}
                }
            }
            Err(ProviderError::Unavailable)
        };
        tokio::time::timeout(timeout, collect)
            .await
            .unwrap_or_else(|_| Err(ProviderError::Timeout("whole answer".into())))
    }
}
