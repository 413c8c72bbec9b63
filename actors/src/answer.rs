//! A turn's stream folded into one answer, for a client that waits for the whole of it (the
//! non-streaming send): the text, the tool executions, the approval request it ended with, or the
//! failure its `error` event reported.

use std::sync::Arc;

use crate::model::{ApprovalRequestView, StreamMessage, StreamMessageType, ToolExecution};
use crate::provider::ProviderError;
use crate::stream::StreamBuffer;

/// Everything a turn answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The text (an approval request's prompt joins it, as the original did).
    pub content: String,
    /// The tool calls that ran, in call order.
    pub tool_executions: Vec<ToolExecution>,
    /// The approval request the turn ended with, if any.
    pub approval_request: Option<ApprovalRequestView>,
    /// The question of a tool's server the turn ended with, if any.
    pub elicitation_request: Option<ElicitationView>,
}

/// A tool's question for the person, as a non-streaming answer gives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ElicitationView {
    /// Answer it with `POST /v1/chat/elicitations/{request_id}`.
    pub request_id: String,
    /// The call that asks.
    pub tool_call_id: String,
    /// Its tool.
    pub tool_name: String,
    /// The question.
    pub question: crate::elicitation::Question,
}

/// What kind of failure an `error` event reports, for the status a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Storage failed.
    Storage,
    /// The provider did not answer in time.
    Timeout,
    /// The provider failed, or the turn was stopped.
    Provider,
}

/// A turn's `error` event: its stable code and text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TurnFailure {
    /// The stable code (`rate_limited`, `timeout`, `storage_unavailable`, ...).
    pub code: String,
    /// The text.
    pub message: String,
}

impl TurnFailure {
    /// What kind of failure its code names.
    pub fn kind(&self) -> FailureKind {
        if self.code == crate::storage::StorageError::CODE {
            FailureKind::Storage
        } else if self.code == ProviderError::Timeout(String::new()).code() {
            FailureKind::Timeout
        } else {
            FailureKind::Provider
        }
    }
}

impl Answer {
    /// Reads a stream from its first event to its end and folds it.
    pub async fn collect(buffer: &Arc<StreamBuffer>) -> Result<Self, TurnFailure> {
        let mut reader = buffer.subscribe(0);
        let mut answer = Answer::default();
        while let Some(batch) = reader.next_batch().await {
            for event in batch {
                let Ok(message) = serde_json::from_str::<StreamMessage>(&event.data) else {
                    continue;
                };
                answer.fold(message)?;
            }
        }
        Ok(answer)
    }

    fn fold(&mut self, message: StreamMessage) -> Result<(), TurnFailure> {
        match message.kind {
            StreamMessageType::Message => self.content.push_str(message.content.as_deref().unwrap_or("")),
            StreamMessageType::ToolExecution => self.tool_executions.extend(message.tool_executions),
            StreamMessageType::Error => {
                return Err(TurnFailure {
                    code: message.code.unwrap_or_else(|| "upstream_error".into()),
                    message: message.error.unwrap_or_default(),
                });
            }
            StreamMessageType::ToolApprovalRequest => {
                // As the original: the prompt joins the content; the request is given too.
                self.content.push_str(message.content.as_deref().unwrap_or(""));
                self.approval_request = message.request_id.map(|request_id| ApprovalRequestView {
                    request_id,
                    tool_calls: message.tool_calls,
                    status: Some(crate::approval::ApprovalStatus::Pending.as_str().into()),
                    processed: Some(false),
                });
            }
            StreamMessageType::ElicitationRequest => {
                if let (Some(request_id), Some(question)) = (message.request_id, message.question) {
                    self.elicitation_request = Some(ElicitationView {
                        request_id,
                        tool_call_id: message.tool_call_id.unwrap_or_default(),
                        tool_name: message.tool_name.unwrap_or_default(),
                        question: *question,
                    });
                }
            }
            // Progress is for people watching a stream; a whole answer has the results.
            StreamMessageType::Done | StreamMessageType::ToolCall | StreamMessageType::ToolProgress => {}
        }
        Ok(())
    }
}
