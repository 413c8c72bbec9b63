//! Tools as a turn sees them: a [`ToolCatalog`] lists what the model may call and runs one call.
//! [`execute_all`] scatters every call of one model turn at once and gathers the results by call
//! index, so their order is the call order whatever order they finish in.

use std::sync::Arc;

use futures::future::{BoxFuture, join_all};
use serde::{Deserialize, Serialize};

use crate::model::{ToolCall, ToolExecution};

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name the model calls it by (`<server>__<tool>`).
    pub name: String,
    /// The MCP server that provides it.
    pub server: String,
    /// The server's own name for it.
    pub tool: String,
    /// What it does.
    pub description: String,
    /// Its full JSON Schema.
    pub input_schema: serde_json::Value,
    /// The server's annotations (`readOnlyHint`, ...), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Value>,
}

/// What one tool call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolOutcome {
    /// The tool answered.
    Success(String),
    /// The call failed (unknown tool, tool error, timeout, dead server).
    Failure(String),
    /// The server needs the person's input first (an "input required" result): the call is
    /// made again with the answers and the state.
    InputRequired {
        /// What to ask (none: send the state straight back).
        questions: Vec<Question>,
        /// The server's opaque state.
        request_state: Option<String>,
    },
}

/// How one call of a round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// With a result (or a failure).
    Done(ToolExecution),
    /// Waiting on the person: the server's questions and state.
    NeedsInput {
        /// What to ask.
        questions: Vec<Question>,
        /// The server's opaque state.
        request_state: Option<String>,
    },
}

/// The tools a turn may use.
pub trait ToolCatalog: Send + Sync + 'static {
    /// The tools on offer, in a stable order (shared: every model call carries them).
    fn tools(&self) -> Arc<Vec<ToolSpec>>;
    /// Runs one call (again, with the person's answers, when `reply` is given); what its server
    /// says while it runs goes to `hooks`.
    fn call(&self, call: &ToolCall, reply: Option<InputReply>, hooks: CallHooks) -> BoxFuture<'static, ToolOutcome>;
}

pub use crate::elicitation::{InputReply, Question};
pub use crate::mcp::asking::AskSink;
pub use crate::mcp::progress::{ProgressNote, ProgressSink};

/// Where what a server says during a call goes: its progress, and its questions for the person
/// (a call without an asker has them answered `cancel`).
#[derive(Clone, Default)]
pub struct CallHooks {
    /// Progress notices.
    pub progress: Option<ProgressSink>,
    /// Questions (the 2025-11-25 era's in-flight `elicitation/create`).
    pub asker: Option<AskSink>,
}

/// What is kept of a long tool result (for the model, and for storage beyond its own bound): the
/// head and the tail, with a notice of how much was left out in between.
pub fn keep_head_and_tail(text: &str, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text.to_owned();
    }
    let keep = max_chars.saturating_sub(120) / 2;
    let head: String = text.chars().take(keep).collect();
    let tail: String = text.chars().skip(total - keep).collect();
    format!(
        "{head}\n\n[… {} of {total} characters left out: the tool's output was too long …]\n\n{tail}",
        total - 2 * keep
    )
}

/// Runs every call at once (each with its answers in `replies`, if any) and returns how each
/// ended, in call order; what a server says during call `i` goes to `hooks(i)`.
pub async fn execute_all(
    catalog: &Arc<dyn ToolCatalog>,
    calls: &[ToolCall],
    replies: &[Option<InputReply>],
    hooks: impl Fn(usize) -> CallHooks,
) -> Vec<Ran> {
    join_all(calls.iter().enumerate().map(|(i, call)| {
        let pending = catalog.call(call, replies.get(i).cloned().flatten(), hooks(i));
        let call = call.clone();
        async move {
            let start_time = crate::model::now();
            let outcome = pending.await;
            let end_time = crate::model::now();
            let (result, error) = match outcome {
                ToolOutcome::Success(text) => (text, None),
                ToolOutcome::Failure(err) => (format!("Error executing tool: {err}"), Some(err)),
                ToolOutcome::InputRequired {
                    questions,
                    request_state,
                } => {
                    return Ran::NeedsInput {
                        questions,
                        request_state,
                    };
                }
            };
            Ran::Done(ToolExecution {
                id: call.id,
                tool_name: call.function.name,
                arguments: call.function.arguments,
                result,
                error,
                start_time,
                end_time,
                duration_ms: (end_time - start_time).num_milliseconds(),
            })
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_results_keep_head_and_tail() {
        let text: String = (0..1000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        assert_eq!(keep_head_and_tail(&text, 2000), text);
        let short = keep_head_and_tail(&text, 320);
        assert!(short.chars().count() <= 420, "{}", short.len());
        assert!(short.starts_with(&text[..100]));
        assert!(short.ends_with(&text[900..]));
        assert!(short.contains("left out"));
    }

    #[actix_rt::test]
    async fn unknown_tools_fail_each_call_alone_in_call_order() {
        let catalog: Arc<dyn ToolCatalog> = Arc::new(crate::mcp::McpTools::default());
        let calls = vec![
            ToolCall::function("c1", "a", "{}".into()),
            ToolCall::function("c2", "b", "{}".into()),
        ];
        let results: Vec<ToolExecution> = execute_all(&catalog, &calls, &[], |_| CallHooks::default())
            .await
            .into_iter()
            .filter_map(|ran| match ran {
                Ran::Done(execution) => Some(execution),
                Ran::NeedsInput { .. } => None,
            })
            .collect();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].id, "c1");
        assert_eq!(results[1].error.as_deref(), Some("unknown tool: b"));
        assert_eq!(results[1].result, "Error executing tool: unknown tool: b");
    }
}
