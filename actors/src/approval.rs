//! Tool approval: the policy (allow / ask / deny rules on `<server>__<tool>` globs, with precedence
//! deny > ask > allow), the persistent "always allow" grants, and the records of approval requests
//! and their decisions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::elicitation::{ElicitAnswer, InputState, InvalidAnswer, Question};
use crate::ids::{SessionId, StreamId, UserId};
use crate::model::{ToolCall, ToolExecution};
use crate::tools::ToolSpec;

/// What a rule says about a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Run without asking.
    Allow,
    /// Ask the person first.
    Ask,
    /// Never run.
    Deny,
}

/// One `[[approval.rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// Glob on the exposed tool name (`*` any run, `?` one character), e.g. `demo__*`.
    pub tool: String,
    /// What to do.
    pub policy: Policy,
}

/// `[approval]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// Policy for tools no rule matches.
    pub default: Policy,
    /// Allow tools their server annotates `readOnlyHint: true` (unless a rule says ask or deny).
    pub allow_read_only: bool,
    /// Seconds a pending approval waits for a decision; then it counts as denied.
    pub expiry_secs: u64,
    /// Rules; every matching rule counts, the strictest wins.
    pub rules: Vec<ApprovalRule>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            default: Policy::Ask,
            allow_read_only: false,
            expiry_secs: 600,
            rules: Vec::new(),
        }
    }
}

/// Why a call may or may not run without asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Runs; the reason names the rule or grant.
    Allowed(String),
    /// Never runs; the reason names the rule.
    Denied(String),
    /// Needs the person's decision.
    Ask,
}

/// `*` and `?` glob matching on whole names.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl ApprovalConfig {
    /// The policy's verdict for a tool, before grants. `spec` gives its annotations, if known.
    pub fn verdict(&self, tool: &str, spec: Option<&ToolSpec>) -> Verdict {
        let matching: Vec<&ApprovalRule> = self.rules.iter().filter(|r| glob_matches(&r.tool, tool)).collect();
        let strictest = matching.iter().map(|r| r.policy).max();
        match strictest {
            Some(Policy::Deny) => {
                let rule = matching
                    .iter()
                    .find(|r| r.policy == Policy::Deny)
                    .map_or("", |r| r.tool.as_str());
                return Verdict::Denied(format!("rule `{rule}`"));
            }
            Some(Policy::Ask) => return Verdict::Ask,
            Some(Policy::Allow) => {
                let rule = matching
                    .iter()
                    .find(|r| r.policy == Policy::Allow)
                    .map_or("", |r| r.tool.as_str());
                return Verdict::Allowed(format!("rule `{rule}`"));
            }
            None => {}
        }
        let read_only = spec
            .and_then(|s| s.annotations.as_ref())
            .and_then(|a| a.get("readOnlyHint"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        if self.allow_read_only && read_only {
            return Verdict::Allowed("read-only tool".into());
        }
        match self.default {
            Policy::Allow => Verdict::Allowed("default policy".into()),
            Policy::Ask => Verdict::Ask,
            Policy::Deny => Verdict::Denied("default policy".into()),
        }
    }
}

impl ApprovalConfig {
    /// Whether any call of the batch needs the person (then the user's grants are worth reading).
    pub fn may_ask(&self, calls: &[ToolCall], specs: &[ToolSpec]) -> bool {
        calls.iter().any(|c| self.verdict_for(c, specs) == Verdict::Ask)
    }

    /// Where each call of a model's batch stands, in call order: the policy's verdict, and a
    /// call the policy would ask about runs without asking when the user granted its tool.
    pub fn classify(&self, calls: &[ToolCall], specs: &[ToolSpec], granted: &[String]) -> Vec<BatchCall> {
        calls
            .iter()
            .map(|call| {
                let state = match self.verdict_for(call, specs) {
                    Verdict::Allowed(by) => CallState::Approved { by },
                    Verdict::Denied(by) => CallState::Denied {
                        by: format!("policy ({by})"),
                    },
                    Verdict::Ask if granted.contains(&call.function.name) => CallState::Approved { by: "grant".into() },
                    Verdict::Ask => CallState::Pending,
                };
                BatchCall::new(call.clone(), state)
            })
            .collect()
    }

    fn verdict_for(&self, call: &ToolCall, specs: &[ToolSpec]) -> Verdict {
        let name = &call.function.name;
        self.verdict(name, specs.iter().find(|s| &s.name == name))
    }
}

/// Where a call of an approval batch stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CallState {
    /// Waiting for the person.
    Pending,
    /// Runs (by a rule, a grant, or the person).
    Approved {
        /// Which rule, grant or person.
        by: String,
    },
    /// Does not run.
    Denied {
        /// Which rule or person, or expiry.
        by: String,
    },
}

/// What became of an approved call: stored as `running` before it is sent, so a crash can never
/// make a call that may have acted run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// Sent to its server; no answer stored yet.
    Running,
    /// The tool answered.
    Done,
    /// The call failed (tool error, timeout, server down).
    Failed,
    /// The server stopped (or the turn was cancelled) while it ran: it may or may not have acted.
    /// It is never run again.
    Unknown,
}

/// One call of an approval batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchCall {
    /// The call.
    pub call: ToolCall,
    /// Where it stands.
    #[serde(flatten)]
    pub state: CallState,
    /// What became of it, once approved and sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CallOutcome>,
    /// Its execution, when it finished while a sibling call of the batch waits on the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ToolExecution>,
    /// Its server's questions for the person and the answers so far (an elicitation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputState>,
}

impl BatchCall {
    /// A call of a new batch, where the policy put it.
    pub fn new(call: ToolCall, state: CallState) -> Self {
        Self {
            call,
            state,
            outcome: None,
            result: None,
            input: None,
        }
    }

    /// Whether it is sent now: approved, not finished, and not waiting on the person.
    pub fn ready_to_run(&self) -> bool {
        matches!(self.state, CallState::Approved { .. })
            && self.result.is_none()
            && self.input.as_ref().is_none_or(|input| input.next_question().is_none())
    }
}

impl ApprovalRecord {
    /// Marks every call about to be sent `running` (before any is sent).
    pub fn start_running(&mut self) {
        for call in &mut self.calls {
            if call.ready_to_run() {
                call.outcome = Some(CallOutcome::Running);
            }
        }
    }

    /// Whether this is a tool's question for the person (an elicitation), not an approval.
    pub fn is_elicitation(&self) -> bool {
        self.request_id
            .strip_prefix(ELICITATION)
            .is_some_and(|rest| rest.starts_with('_'))
    }

    /// Whether its question was asked during a running call (it lapses with the call; it is
    /// never a pause to resume).
    pub fn is_live(&self) -> bool {
        self.calls
            .iter()
            .any(|c| c.input.as_ref().is_some_and(|input| input.live))
    }

    /// Answers the question asked now, once the answer fits it: the answer (as the server is
    /// sent it) is kept with its call, and the request is decided by `person`. `None` when no
    /// question waits.
    pub fn answer(
        &mut self,
        answer: &ElicitAnswer,
        person: &str,
        now: DateTime<Utc>,
    ) -> Option<Result<serde_json::Value, InvalidAnswer>> {
        let (_, question) = self.asking()?;
        Some(
            question
                .check(answer)
                .inspect(|sent| self.record_answer(sent.clone(), person, now)),
        )
    }

    /// Keeps an answer already checked against the question asked now, decided by `person`.
    pub fn record_answer(&mut self, sent: serde_json::Value, person: &str, now: DateTime<Utc>) {
        if let Some((i, question)) = self.asking() {
            let key = question.key.clone();
            if let Some(input) = self.calls[i].input.as_mut() {
                input.answers.insert(key, sent);
            }
        }
        self.status = ApprovalStatus::Approved;
        self.decided_by = Some(person.to_owned());
        self.decided_at = Some(now);
    }

    /// The question the person is asked now: its call's index and the question.
    pub fn asking(&self) -> Option<(usize, &Question)> {
        self.calls
            .iter()
            .enumerate()
            .find_map(|(i, c)| Some((i, c.input.as_ref()?.next_question()?)))
    }

    /// Marks every call still `running` with `outcome`.
    pub fn finish_running(&mut self, outcome: impl Fn(&ToolCall) -> CallOutcome) {
        for call in &mut self.calls {
            if call.outcome == Some(CallOutcome::Running) {
                call.outcome = Some(outcome(&call.call));
            }
        }
    }

    /// Whether any call is still marked `running`.
    pub fn has_running(&self) -> bool {
        self.calls.iter().any(|c| c.outcome == Some(CallOutcome::Running))
    }
}

/// The result of a call whose outcome is unknown: the server stopped, or the turn was cancelled,
/// while it ran. The model and the person read that it may have acted and is not run again.
pub fn outcome_unknown(call: &ToolCall, why: &str) -> ToolExecution {
    ended_without_result(
        call,
        format!(
            "the outcome is unknown: {why} while this call was running; it may or may not have acted, and it is \
             not run again"
        ),
    )
}

/// The execution record of a call that has no result of its own: `error` says why.
pub fn ended_without_result(call: &ToolCall, error: String) -> ToolExecution {
    let now = crate::model::now();
    ToolExecution {
        id: call.id.clone(),
        tool_name: call.function.name.clone(),
        arguments: call.function.arguments.clone(),
        result: format!("Error executing tool: {error}"),
        error: Some(error),
        start_time: now,
        end_time: now,
        duration_ms: 0,
    }
}

/// What an elicitation's id starts with (`elicitation_<uuid>`; it is stored beside the
/// approvals, `approval_<uuid>`).
pub const ELICITATION: &str = "elicitation";

/// The states of an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for the person.
    Pending,
    /// Every call approved.
    Approved,
    /// Every call denied.
    Denied,
    /// Some approved, some denied.
    PartiallyApproved,
    /// Not decided in time (counts as denied).
    Expired,
    /// A new message came instead of a decision (counts as denied).
    Superseded,
}

impl ApprovalStatus {
    /// Its name in storage and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::PartiallyApproved => "partially_approved",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Superseded => "superseded",
        }
    }

    /// The status a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        Self::from_name(name).ok()
    }

    /// The status a name stands for, or serde's error naming the valid ones.
    pub fn from_name(name: &str) -> Result<Self, serde::de::value::Error> {
        use serde::de::IntoDeserializer;
        Self::deserialize(name.into_deserializer())
    }
}

/// The result of a call that was not run.
pub fn denied(call: &ToolCall, by: &str) -> ToolExecution {
    ended_without_result(call, format!("the tool call was denied by {by}"))
}

/// An approval request and, once decided, its decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// `approval_<uuid>`.
    pub request_id: String,
    /// Whose.
    pub user_id: UserId,
    /// In which session.
    pub session_id: SessionId,
    /// The stream that asked.
    pub stream_id: StreamId,
    /// Every call of the model's batch, in call order.
    pub calls: Vec<BatchCall>,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// When it was asked.
    pub created_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// Who decided (`user:<id>`, `expiry`, `superseded`).
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
}

impl ApprovalRecord {
    /// The status as of `now` (a pending request past its expiry is `expired`).
    pub fn effective_status(&self, now: DateTime<Utc>) -> ApprovalStatus {
        if self.status == ApprovalStatus::Pending && now >= self.expires_at {
            ApprovalStatus::Expired
        } else {
            self.status
        }
    }

    /// Applies the person's decision to the pending calls: the chosen ones are approved (all of
    /// them when `approved_ids` is absent), the others denied; a "remember" grant also approves
    /// the pending sibling calls of the same tool. Returns the tools to grant.
    pub fn decide(&mut self, decision: &Decision, person: &str, now: DateTime<Utc>) -> Vec<String> {
        let chosen = |id: &str| {
            decision.approved
                && decision
                    .approved_ids
                    .as_ref()
                    .is_none_or(|ids| ids.iter().any(|a| a == id))
        };
        let asked: Vec<usize> = self
            .calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state == CallState::Pending)
            .map(|(i, _)| i)
            .collect();
        let mut granted: Vec<String> = Vec::new();
        for call in &mut self.calls {
            if call.state == CallState::Pending && chosen(&call.call.id) {
                call.state = CallState::Approved { by: person.to_owned() };
                if decision.remember != Remember::None && !granted.contains(&call.call.function.name) {
                    granted.push(call.call.function.name.clone());
                }
            }
        }
        // A new grant also covers the pending sibling calls of the same tool in this batch.
        for call in &mut self.calls {
            if call.state == CallState::Pending {
                call.state = if granted.contains(&call.call.function.name) {
                    CallState::Approved {
                        by: format!("{person} (grant)"),
                    }
                } else {
                    CallState::Denied {
                        by: format!("the user ({person})"),
                    }
                };
            }
        }
        let decided: Vec<bool> = asked
            .iter()
            .map(|&i| matches!(self.calls[i].state, CallState::Approved { .. }))
            .collect();
        self.status = if decided.iter().all(|a| *a) {
            ApprovalStatus::Approved
        } else if decided.iter().any(|a| *a) {
            ApprovalStatus::PartiallyApproved
        } else {
            ApprovalStatus::Denied
        };
        self.decided_by = Some(person.to_owned());
        self.decided_at = Some(now);
        granted
    }

    /// Settles a request nobody decided (it expired, or a new message came instead): every call
    /// is denied. Returns the denial results, in call order, so the history stays valid.
    pub fn abandon(&mut self, now: DateTime<Utc>) -> Vec<ToolExecution> {
        let expired = self.effective_status(now) == ApprovalStatus::Expired;
        let by = if expired {
            "expiry (no decision in time)"
        } else {
            "a new message sent instead of a decision"
        };
        self.status = if expired {
            ApprovalStatus::Expired
        } else {
            ApprovalStatus::Superseded
        };
        self.decided_by = Some(if expired { "expiry" } else { "superseded" }.into());
        self.decided_at = Some(now);
        if self.is_elicitation() {
            // What finished keeps its result; a question nobody answered counts as `cancel`.
            let why = if expired {
                "it expired (counted as cancel)"
            } else {
                "a new message was sent instead (counted as cancel)"
            };
            return self
                .calls
                .iter()
                .map(|c| match (&c.result, &c.input, &c.state) {
                    (Some(result), _, _) => result.clone(),
                    (None, Some(_), _) => ended_without_result(
                        &c.call,
                        format!("the tool asked the person a question that was not answered: {why}"),
                    ),
                    (None, None, CallState::Denied { by }) => denied(&c.call, by),
                    (None, None, _) => denied(&c.call, by),
                })
                .collect();
        }
        for call in &mut self.calls {
            call.state = CallState::Denied { by: by.into() };
        }
        self.calls.iter().map(|c| denied(&c.call, by)).collect()
    }

    /// The calls waiting for the person.
    pub fn pending_calls(&self) -> Vec<ToolCall> {
        self.calls
            .iter()
            .filter(|c| c.state == CallState::Pending)
            .map(|c| c.call.clone())
            .collect()
    }
}

/// How long a grant lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Remember {
    /// Just this decision.
    None,
    /// This tool, in this session.
    Session,
    /// This tool, in all of the user's sessions.
    User,
}

/// A stored "always allow".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Grant {
    /// Its id.
    pub id: String,
    /// The exposed tool name.
    pub tool: String,
    /// `session` or `user`.
    pub scope: Remember,
    /// The session, for session grants.
    pub session_id: Option<SessionId>,
    /// When it was given.
    pub created_at: DateTime<Utc>,
}

/// The person's decision on a request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Approve (the `approved_ids`, or all) or deny all.
    pub approved: bool,
    /// A subset of the pending calls to approve; the others are denied.
    pub approved_ids: Option<Vec<String>>,
    /// Grant "always allow" for the approved tools.
    pub remember: Remember,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_matches("demo__*", "demo__echo"));
        assert!(glob_matches("*__delete_*", "db__delete_rows"));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("demo__*", "other__echo"));
        assert!(!glob_matches("echo", "demo__echo"));
        assert!(glob_matches("*", ""));
    }

    #[test]
    fn deny_beats_ask_beats_allow_and_the_default_is_ask() {
        let config = ApprovalConfig {
            rules: vec![
                ApprovalRule {
                    tool: "db__*".into(),
                    policy: Policy::Allow,
                },
                ApprovalRule {
                    tool: "db__drop*".into(),
                    policy: Policy::Deny,
                },
                ApprovalRule {
                    tool: "db__write*".into(),
                    policy: Policy::Ask,
                },
            ],
            ..ApprovalConfig::default()
        };
        assert!(matches!(config.verdict("db__select", None), Verdict::Allowed(_)));
        assert!(matches!(config.verdict("db__drop_table", None), Verdict::Denied(_)));
        assert_eq!(config.verdict("db__write_row", None), Verdict::Ask);
        assert_eq!(config.verdict("web__fetch", None), Verdict::Ask);
    }

    #[test]
    fn read_only_tools_may_be_allowed() {
        let spec = ToolSpec {
            name: "x__read".into(),
            server: "x".into(),
            tool: "read".into(),
            description: String::new(),
            input_schema: serde_json::json!({}),
            annotations: Some(serde_json::json!({"readOnlyHint": true})),
        };
        let mut config = ApprovalConfig::default();
        assert_eq!(config.verdict("x__read", Some(&spec)), Verdict::Ask);
        config.allow_read_only = true;
        assert!(matches!(config.verdict("x__read", Some(&spec)), Verdict::Allowed(_)));
        config.rules.push(ApprovalRule {
            tool: "x__*".into(),
            policy: Policy::Ask,
        });
        assert_eq!(
            config.verdict("x__read", Some(&spec)),
            Verdict::Ask,
            "a rule beats the annotation"
        );
    }

    #[test]
    fn a_batch_is_classified_in_call_order_and_grants_spare_the_question() {
        let config = ApprovalConfig {
            rules: vec![ApprovalRule {
                tool: "db__drop*".into(),
                policy: Policy::Deny,
            }],
            ..ApprovalConfig::default()
        };
        let calls = [
            ToolCall::function("1", "db__drop_table", "{}".into()),
            ToolCall::function("2", "db__select", "{}".into()),
            ToolCall::function("3", "web__fetch", "{}".into()),
        ];
        assert!(config.may_ask(&calls, &[]));
        let batch = config.classify(&calls, &[], &["db__select".to_owned()]);
        let ids: Vec<&str> = batch.iter().map(|c| c.call.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
        assert!(matches!(batch[0].state, CallState::Denied { .. }));
        assert_eq!(batch[1].state, CallState::Approved { by: "grant".into() });
        assert_eq!(batch[2].state, CallState::Pending);
        assert!(!config.may_ask(&calls[..1], &[]), "a denied call asks nobody");
    }
}
