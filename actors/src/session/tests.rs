//! The turn loop without HTTP: a real storage actor on a temporary SQLite file, a scripted
//! provider behind a real provider actor, and a tool catalog whose calls meet at a gate, driven
//! through `Chat` as the shell drives it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::approval::{ApprovalConfig, ApprovalStatus, Decision, Policy, Remember};
use crate::chat::{Chat, Submission};
use crate::ids::UserId;
use crate::limits::TurnLimits;
use crate::model::{Role, ToolCall};
use crate::provider::{
    ChatProvider, CompletionRequest, ProviderError, ProviderEvent, ProviderHandle, Providers, Purpose,
};
use crate::registry::SessionRegistry;
use crate::session::{SessionDeps, SessionSettings};
use crate::storage::{Page, SqliteStore, Storage};
use crate::stream::StreamHub;
use crate::tools::{ToolCatalog, ToolOutcome, ToolSpec};

const WAIT: Duration = Duration::from_secs(10);

/// Asks for both tools on a person's message; answers with text once it has their results.
struct Scripted;

impl ChatProvider for Scripted {
    fn stream(&self, request: CompletionRequest) -> BoxStream<'static, Result<ProviderEvent, ProviderError>> {
        let last = request.messages.last().map(|m| m.role);
        let events = match (request.purpose, last) {
            (Purpose::Title, _) => vec![ProviderEvent::Text("Scripted title".into())],
            (Purpose::Chat, Some(Role::User)) => vec![
                ProviderEvent::Text("Looking. ".into()),
                ProviderEvent::ToolCalls(vec![
                    ToolCall::function("call_slow", "t__slow", "{}".into()),
                    ToolCall::function("call_fast", "t__fast", r#"{"x":1}"#.into()),
                ]),
            ],
            (Purpose::Chat, _) => {
                let results: Vec<String> = request
                    .messages
                    .iter()
                    .filter(|m| m.role == Role::Tool)
                    .map(|m| m.content.clone())
                    .collect();
                vec![ProviderEvent::Text(format!("Results: {}", results.join(", ")))]
            }
        };
        futures::stream::iter(events.into_iter().chain([ProviderEvent::Done]).map(Ok)).boxed()
    }
}

/// Two tools. Both calls must have started before either answers (a sequential run never passes
/// the gate), and the fast one answers first, so call order and finish order differ.
struct Gated {
    gate: Arc<tokio::sync::Barrier>,
    fast_done: Arc<tokio::sync::Notify>,
    calls: Mutex<Vec<String>>,
}

impl Gated {
    fn new() -> Self {
        Self {
            gate: Arc::new(tokio::sync::Barrier::new(2)),
            fast_done: Arc::new(tokio::sync::Notify::new()),
            calls: Mutex::new(Vec::new()),
        }
    }

    fn spec(tool: &str) -> ToolSpec {
        ToolSpec {
            name: format!("t__{tool}"),
            server: "t".into(),
            tool: tool.into(),
            description: tool.into(),
            input_schema: serde_json::json!({"type": "object"}),
            annotations: None,
        }
    }
}

impl ToolCatalog for Gated {
    fn tools(&self) -> Arc<Vec<ToolSpec>> {
        Arc::new(vec![Self::spec("fast"), Self::spec("slow")])
    }

    fn call(
        &self,
        call: &ToolCall,
        _reply: Option<crate::tools::InputReply>,
        _hooks: crate::tools::CallHooks,
    ) -> BoxFuture<'static, ToolOutcome> {
        self.calls.lock().unwrap().push(call.function.name.clone());
        let (gate, fast_done) = (Arc::clone(&self.gate), Arc::clone(&self.fast_done));
        let name = call.function.name.clone();
        Box::pin(async move {
            if tokio::time::timeout(WAIT, gate.wait()).await.is_err() {
                return ToolOutcome::Failure("the other call never started".into());
            }
            if name == "t__fast" {
                fast_done.notify_one();
                ToolOutcome::Success("fast result".into())
            } else {
                let _ = tokio::time::timeout(WAIT, fast_done.notified()).await;
                ToolOutcome::Success("slow result".into())
            }
        })
    }
}

struct Harness {
    chat: Chat,
    tools: Arc<Gated>,
    _dir: tempfile::TempDir,
}

fn harness(approval: ApprovalConfig) -> Harness {
    harness_with(approval, 100)
}

fn harness_with(approval: ApprovalConfig, max_live_sessions: usize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), 4).unwrap();
    let storage = Storage::start(Arc::new(store), 1, WAIT);
    let arbiter = Arbiter::current();
    let handle = ProviderHandle::start("scripted", Arc::new(|| Arc::new(Scripted) as _), &arbiter);
    let providers = crate::sync::Shared::new(Providers::new(vec![handle], &[], 3, Duration::from_secs(30)));
    let tools = Arc::new(Gated::new());
    let hub = Arc::new(StreamHub::default());
    let deps = Arc::new(SessionDeps {
        storage: storage.clone(),
        providers: providers.clone(),
        tools: Arc::clone(&tools) as Arc<dyn ToolCatalog>,
        hub: Arc::clone(&hub),
        settings: crate::sync::Shared::new(SessionSettings {
            system_prompt: None,
            max_tool_rounds: 4,
            first_token_timeout: WAIT,
            chunk_gap_timeout: WAIT,
            idle_timeout: Duration::from_secs(60),
            max_live_sessions,
            title_timeout: WAIT,
            max_tool_output_chars: 10_000,
            max_stored_tool_output_chars: 10_000,
            approval,
            elicitation_expiry: WAIT,
            flush_every: Duration::from_millis(500),
        }),
    });
    let registry = SessionRegistry::new(deps, WAIT).start();
    let readers = crate::limits::ReaderLimits::new(8);
    let chat = Chat::new(registry, storage, hub, providers, TurnLimits::new(0, 0), readers, WAIT);
    Harness { chat, tools, _dir: dir }
}

fn allow_all() -> ApprovalConfig {
    ApprovalConfig {
        default: Policy::Allow,
        ..ApprovalConfig::default()
    }
}

fn user() -> UserId {
    UserId::new(7).unwrap()
}

fn says(text: &str) -> Submission {
    Submission {
        text: text.into(),
        ..Submission::default()
    }
}

#[actix_rt::test]
async fn tool_calls_run_at_once_and_come_back_in_call_order() {
    let h = harness(allow_all());
    let started = h.chat.send(user(), says("check both")).await.ok().unwrap();
    let answer = h.chat.answer(&started, WAIT).await.unwrap();

    let ids: Vec<&str> = answer.tool_executions.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["call_slow", "call_fast"], "call order, not finish order");
    assert_eq!(answer.tool_executions[0].result, "slow result");
    assert_eq!(answer.tool_executions[1].result, "fast result");
    assert!(answer.tool_executions.iter().all(|e| e.error.is_none()), "{answer:?}");
    assert_eq!(answer.content, "Looking. Results: slow result, fast result");
    assert_eq!(h.tools.calls.lock().unwrap().len(), 2);

    // Everything the stream said is in the history, in order.
    let stored = h
        .chat
        .messages(user(), started.session_id.clone(), Page { limit: 50, offset: 0 })
        .await
        .unwrap();
    let roles: Vec<Role> = stored.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Assistant, Role::Tool, Role::Tool, Role::Assistant]
    );
    assert_eq!(stored[1].tool_calls.len(), 2);
    assert_eq!(stored[2].tool_call_id.as_deref(), Some("call_slow"));
    assert_eq!(stored[4].content, "Results: slow result, fast result");
}

#[actix_rt::test]
async fn a_tool_that_needs_approval_runs_only_once_approved() {
    let h = harness(ApprovalConfig::default());
    let started = h.chat.send(user(), says("check both")).await.ok().unwrap();
    let answer = h.chat.answer(&started, WAIT).await.unwrap();
    let request = answer.approval_request.expect("the turn asks for approval");
    assert_eq!(request.tool_calls.len(), 2);
    assert!(
        h.tools.calls.lock().unwrap().is_empty(),
        "nothing runs before the decision"
    );

    // Another user cannot decide it, in band or not.
    let other = UserId::new(8).unwrap();
    let in_band = format!("[APPROVE_TOOLS:{}]", request.request_id);
    assert!(h.chat.send(other, says(&in_band)).await.is_err());
    assert!(h.tools.calls.lock().unwrap().is_empty());

    // The owner approves in band, as the original UI does.
    let continued = h
        .chat
        .send(
            user(),
            Submission {
                session_id: Some(started.session_id.clone()),
                ..says(&in_band)
            },
        )
        .await
        .ok()
        .unwrap();
    let answer = h.chat.answer(&continued, WAIT).await.unwrap();
    assert_eq!(answer.tool_executions.len(), 2);
    assert_eq!(answer.content, "Results: slow result, fast result");
    let approvals = h.chat.approvals(user(), Some(ApprovalStatus::Approved)).await.unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].decided_by.as_deref(), Some("user:7"));

    // A second decision on the same request is refused.
    let again = Decision {
        approved: false,
        approved_ids: None,
        remember: Remember::None,
    };
    let refused = h.chat.decide(user(), &request.request_id, None, again).await.err();
    assert!(
        matches!(refused, Some(crate::session::SessionError::AlreadyDecided)),
        "{refused:?}"
    );
}

#[actix_rt::test]
async fn idle_sessions_past_the_cap_leave_memory_and_come_back_from_storage() {
    let h = harness_with(allow_all(), 4);
    let mut sessions = Vec::new();
    for i in 0..12 {
        let started = h.chat.send(user(), says(&format!("session {i}"))).await.ok().unwrap();
        h.chat.answer(&started, WAIT).await.unwrap();
        sessions.push(started.session_id);
    }
    let mut live = usize::MAX;
    for _ in 0..200 {
        live = h.chat.session_actors().await.unwrap();
        if live <= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(live <= 4, "{live} session actors for a cap of 4");
    // The first session's actor is gone; its history comes back from storage.
    let again = Submission {
        session_id: Some(sessions[0].clone()),
        ..says("still there?")
    };
    let started = h.chat.send(user(), again).await.ok().unwrap();
    h.chat.answer(&started, WAIT).await.unwrap();
    let page = Page { limit: 50, offset: 0 };
    let stored = h.chat.messages(user(), sessions[0].clone(), page).await.unwrap();
    assert_eq!(stored.first().map(|m| m.content.as_str()), Some("session 0"));
    assert_eq!(stored.iter().filter(|m| m.role == Role::User).count(), 2);
}
