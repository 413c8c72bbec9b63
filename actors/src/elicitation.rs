//! Elicitation: what an MCP server asks the person during a tool call (the 2026-07-28 revision's
//! "input required" results, and `elicitation/create` requests of older servers), the person's
//! answer, and the check of that answer against the schema the server sent (its defaults
//! applied first, as SEP-1034 asks of clients).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// `[mcp.elicitation]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElicitationConfig {
    /// Declare the `elicitation` capability to MCP servers, and pass their questions to the
    /// person. Off: servers are told nothing can be asked, and a question is answered `decline`.
    pub enabled: bool,
    /// Seconds a question waits for its answer; then it counts as `cancel`.
    pub expiry_secs: u64,
}

impl Default for ElicitationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            expiry_secs: 600,
        }
    }
}

/// How the person answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ElicitAction {
    /// Answered (with `content` for a form).
    Accept,
    /// Said no.
    Decline,
    /// Dismissed without choosing.
    Cancel,
}

impl ElicitAction {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ElicitAction::Accept => "accept",
            ElicitAction::Decline => "decline",
            ElicitAction::Cancel => "cancel",
        }
    }
}

/// The person's answer to one question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElicitAnswer {
    /// Accept, decline or cancel.
    pub action: ElicitAction,
    /// The form's values (`accept` of a form only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Map<String, Value>>,
}

impl ElicitAnswer {
    /// An answer without content.
    pub fn without_content(action: ElicitAction) -> Self {
        Self { action, content: None }
    }
}

/// What a server wants of the person: a form to fill, or a page to visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuestionMode {
    /// Fill in `requested_schema`.
    Form,
    /// Open `url` (the server learns the result there); answer `accept` once done.
    Url,
}

/// One question of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Question {
    /// The server's key for it (MRTR), or `elicitation` for an in-flight request.
    pub key: String,
    /// Form or URL.
    pub mode: QuestionMode,
    /// What the server says to the person.
    pub message: String,
    /// The form's JSON schema (a flat object of primitive properties).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub requested_schema: Option<Value>,
    /// The page to open (URL mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Question {
    /// Reads an `elicitation/create` request's params (as JSON: the form and URL shapes of every
    /// revision); `None` if it is neither.
    pub fn from_params(key: &str, params: &Value) -> Option<Self> {
        let message = params.get("message")?.as_str()?.to_owned();
        let url = params.get("url").and_then(Value::as_str).map(str::to_owned);
        let mode = match params.get("mode").and_then(Value::as_str) {
            Some("url") => QuestionMode::Url,
            Some("form") | None if url.is_none() => QuestionMode::Form,
            None => QuestionMode::Url,
            Some(_) => return None,
        };
        if mode == QuestionMode::Url && url.is_none() {
            return None;
        }
        Some(Self {
            key: key.to_owned(),
            mode,
            message,
            requested_schema: params.get("requestedSchema").cloned(),
            url,
        })
    }

    /// Checks an answer: an `accept` of a form gets the schema's defaults for what it leaves out,
    /// then every value is checked. Returns the answer as the server is sent it
    /// (`{action, content}`).
    pub fn check(&self, answer: &ElicitAnswer) -> Result<Value, InvalidAnswer> {
        let mut result = Map::new();
        result.insert("action".into(), Value::String(answer.action.as_str().into()));
        match (answer.action, self.mode) {
            (ElicitAction::Accept, QuestionMode::Form) => {
                let empty = Value::Object(Map::new());
                let schema = self.requested_schema.as_ref().unwrap_or(&empty);
                let content = check_form(schema, answer.content.clone().unwrap_or_default())?;
                result.insert("content".into(), Value::Object(content));
            }
            _ if answer.content.as_ref().is_some_and(|c| !c.is_empty()) => {
                return Err(InvalidAnswer::new(
                    "/content",
                    "content is only for accepting a form; leave it out",
                ));
            }
            _ => {}
        }
        Ok(Value::Object(result))
    }
}

/// A tool call that waits on the person: its server's questions, their answers so far, and the
/// state the server asked to have sent back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InputState {
    /// The questions, in the server's order.
    pub questions: Vec<Question>,
    /// The server's opaque state, sent back unchanged with the answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_state: Option<String>,
    /// Answers by question key, as the server is sent them.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub answers: BTreeMap<String, Value>,
    /// Rounds of questions this call has had (a server that keeps asking is stopped).
    pub round: u32,
    /// Asked during the call (`elicitation/create`): the running call waits for the answer, and
    /// the question lapses with the call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live: bool,
}

impl InputState {
    /// The first question without an answer.
    pub fn next_question(&self) -> Option<&Question> {
        self.questions.iter().find(|q| !self.answers.contains_key(&q.key))
    }

    /// The call's answers, once every question has one.
    pub fn reply(&self) -> Option<InputReply> {
        self.next_question().is_none().then(|| InputReply {
            responses: self.answers.clone(),
            request_state: self.request_state.clone(),
        })
    }
}

/// What a call is sent again with: the answers by key and the server's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputReply {
    /// `inputResponses`.
    pub responses: BTreeMap<String, Value>,
    /// `requestState`, exactly as the server sent it.
    pub request_state: Option<String>,
}

/// Rounds of questions one call may have before it is stopped (the SDKs' default).
pub const MAX_ROUNDS: u32 = 10;

/// An answer that does not fit the question: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct InvalidAnswer {
    /// A JSON pointer into the request body (`/content/age`).
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl InvalidAnswer {
    fn new(path: &str, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Checks a form's content against its schema (the flat object of primitive properties that
/// elicitation allows), after filling in the defaults of the properties left out.
pub fn check_form(schema: &Value, mut content: Map<String, Value>) -> Result<Map<String, Value>, InvalidAnswer> {
    let empty = Map::new();
    let properties = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    for (name, property) in properties {
        if !content.contains_key(name)
            && let Some(default) = property.get("default")
        {
            content.insert(name.clone(), default.clone());
        }
    }
    for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = name.as_str()
            && !content.contains_key(name)
        {
            return Err(InvalidAnswer::new(&format!("/content/{name}"), "required"));
        }
    }
    for (name, value) in &content {
        let path = format!("/content/{name}");
        let Some(property) = properties.get(name) else {
            return Err(InvalidAnswer::new(&path, "not asked for"));
        };
        check_value(&path, property, value)?;
    }
    Ok(content)
}

fn check_value(path: &str, property: &Value, value: &Value) -> Result<(), InvalidAnswer> {
    let number = |key: &str| property.get(key).and_then(Value::as_f64);
    let kind = property.get("type").and_then(Value::as_str).unwrap_or("string");
    let wrong = |expected: &str| Err(InvalidAnswer::new(path, format!("must be {expected}")));
    match kind {
        "string" => {
            let Some(text) = value.as_str() else {
                return wrong("a string");
            };
            let allowed = allowed_values(property);
            if !allowed.is_empty() && !allowed.contains(&text) {
                return Err(InvalidAnswer::new(path, format!("must be one of {allowed:?}")));
            }
            let length = text.chars().count() as f64;
            if number("minLength").is_some_and(|min| length < min) {
                return wrong(&format!("at least {} characters", number("minLength").unwrap_or(0.0)));
            }
            if number("maxLength").is_some_and(|max| length > max) {
                return wrong(&format!("at most {} characters", number("maxLength").unwrap_or(0.0)));
            }
            match property.get("format").and_then(Value::as_str) {
                Some("email") if !looks_like_email(text) => wrong("an email address"),
                Some("uri") if !text.contains(':') => wrong("a URI"),
                Some("date") if chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_err() => {
                    wrong("a date (YYYY-MM-DD)")
                }
                Some("date-time") if chrono::DateTime::parse_from_rfc3339(text).is_err() => {
                    wrong("a date-time (RFC 3339)")
                }
                _ => Ok(()),
            }
        }
        "number" | "integer" => {
            let Some(n) = value.as_f64() else {
                return wrong("a number");
            };
            if kind == "integer" && n.fract() != 0.0 {
                return wrong("an integer");
            }
            if let Some(min) = number("minimum").filter(|min| n < *min) {
                return wrong(&format!("at least {min}"));
            }
            if let Some(max) = number("maximum").filter(|max| n > *max) {
                return wrong(&format!("at most {max}"));
            }
            Ok(())
        }
        "boolean" if value.is_boolean() => Ok(()),
        "boolean" => wrong("true or false"),
        "array" => {
            let Some(items) = value.as_array() else {
                return wrong("an array");
            };
            let allowed = property.get("items").map(allowed_values).unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                let ok = item
                    .as_str()
                    .is_some_and(|s| allowed.is_empty() || allowed.contains(&s));
                if !ok {
                    return Err(InvalidAnswer::new(
                        &format!("{path}/{i}"),
                        format!("must be one of {allowed:?}"),
                    ));
                }
            }
            let count = items.len() as f64;
            if number("minItems").is_some_and(|min| count < min) {
                return wrong(&format!("at least {} items", number("minItems").unwrap_or(0.0)));
            }
            if number("maxItems").is_some_and(|max| count > max) {
                return wrong(&format!("at most {} items", number("maxItems").unwrap_or(0.0)));
            }
            Ok(())
        }
        other => Err(InvalidAnswer::new(
            path,
            format!("the schema's type {other:?} is not one a form may ask"),
        )),
    }
}

/// The values an enum property allows: `enum`, or the `const`s of `oneOf` / `anyOf` (titled
/// enums); empty when any value is allowed.
fn allowed_values(property: &Value) -> Vec<&str> {
    if let Some(values) = property.get("enum").and_then(Value::as_array) {
        return values.iter().filter_map(Value::as_str).collect();
    }
    ["oneOf", "anyOf"]
        .iter()
        .filter_map(|key| property.get(*key).and_then(Value::as_array))
        .flatten()
        .filter_map(|option| option.get("const").and_then(Value::as_str))
        .collect()
}

fn looks_like_email(text: &str) -> bool {
    text.split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn form(schema: Value) -> Question {
        Question::from_params("q", &json!({"message": "Tell me", "requestedSchema": schema})).expect("a form")
    }

    fn accept(content: Value) -> ElicitAnswer {
        ElicitAnswer {
            action: ElicitAction::Accept,
            content: content.as_object().cloned(),
        }
    }

    #[test]
    fn defaults_fill_what_an_accept_leaves_out() {
        let question = form(json!({"type": "object", "properties": {
            "name": {"type": "string", "default": "John Doe"},
            "age": {"type": "integer", "default": 30},
            "score": {"type": "number", "default": 95.5},
            "status": {"type": "string", "enum": ["active", "inactive"], "default": "active"},
            "verified": {"type": "boolean", "default": true}
        }}));
        let sent = question.check(&accept(json!({"age": 41}))).expect("valid");
        assert_eq!(
            sent,
            json!({"action": "accept", "content": {
                "name": "John Doe", "age": 41, "score": 95.5, "status": "active", "verified": true
            }})
        );
    }

    #[test]
    fn a_wrong_value_is_refused_with_its_path() {
        let question = form(json!({"type": "object", "required": ["email"], "properties": {
            "email": {"type": "string", "format": "email"},
            "guests": {"type": "integer", "minimum": 1, "maximum": 8},
            "size": {"type": "string", "oneOf": [{"const": "s", "title": "Small"}, {"const": "l", "title": "Large"}]},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}}
        }}));
        let path = |content: Value| question.check(&accept(content)).map_err(|e| e.path);
        assert_eq!(path(json!({})), Err("/content/email".into()));
        assert_eq!(path(json!({"email": "nope"})), Err("/content/email".into()));
        assert_eq!(
            path(json!({"email": "a@b.io", "guests": 9})),
            Err("/content/guests".into())
        );
        assert_eq!(
            path(json!({"email": "a@b.io", "guests": 2.5})),
            Err("/content/guests".into())
        );
        assert_eq!(
            path(json!({"email": "a@b.io", "size": "m"})),
            Err("/content/size".into())
        );
        assert_eq!(
            path(json!({"email": "a@b.io", "tags": ["a", "c"]})),
            Err("/content/tags/1".into())
        );
        assert_eq!(
            path(json!({"email": "a@b.io", "extra": 1})),
            Err("/content/extra".into())
        );
        assert!(path(json!({"email": "a@b.io", "guests": 2, "size": "l", "tags": ["b"]})).is_ok());
    }

    #[test]
    fn decline_and_cancel_carry_no_content() {
        let question = form(json!({"type": "object", "properties": {"x": {"type": "string"}}}));
        let declined = question.check(&ElicitAnswer::without_content(ElicitAction::Decline));
        assert_eq!(declined, Ok(json!({"action": "decline"})));
        let with_content = ElicitAnswer {
            action: ElicitAction::Cancel,
            content: json!({"x": "y"}).as_object().cloned(),
        };
        assert_eq!(
            question.check(&with_content).map_err(|e| e.path),
            Err("/content".into())
        );
    }

    #[test]
    fn questions_read_both_modes_and_refuse_others() {
        let url = Question::from_params(
            "k",
            &json!({"mode": "url", "message": "Sign in", "url": "https://x.test/a"}),
        )
        .expect("a url question");
        assert_eq!(url.mode, QuestionMode::Url);
        assert_eq!(
            url.check(&ElicitAnswer::without_content(ElicitAction::Accept)),
            Ok(json!({"action": "accept"}))
        );
        assert!(Question::from_params("k", &json!({"mode": "other", "message": "?"})).is_none());
        assert!(Question::from_params("k", &json!({"mode": "url", "message": "?"})).is_none());
    }
}
