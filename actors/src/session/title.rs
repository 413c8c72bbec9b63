//! Session titles: after a session's first exchange the default title is replaced by one the
//! model writes, tidied as the original did.

use std::sync::Arc;

use actix::prelude::*;

use super::SessionActor;
use crate::model::{ChatMessage, Role, TitleSource};
use crate::provider::{CompletionRequest, Purpose};
use crate::storage::{GetSession, SetTitle};

impl SessionActor {
    /// Asks the default provider for a title and stores it, unless the person set one meanwhile.
    pub(super) fn generate_title(&self, ctx: &mut Context<Self>) {
        let request = CompletionRequest {
            messages: vec![Arc::new(ChatMessage::new(
                Role::System,
                "Write a short title (at most 50 characters) for this conversation. Answer with the title only.",
            ))]
            .into_iter()
            .chain(
                self.history
                    .iter()
                    .filter(|m| matches!(m.role, Role::User | Role::Assistant))
                    .cloned(),
            )
            .collect(),
            tools: Default::default(),
            purpose: Purpose::Title,
        };
        let first_user = self
            .history
            .iter()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone());
        let deps = Arc::clone(&self.deps);
        let (user, id) = (self.user, self.id.clone());
        ctx.spawn(
            async move {
                // Only a default title is ever replaced: don't pay for a model call otherwise.
                let session = deps.storage.ask(GetSession { user, id: id.clone() }).await;
                if !matches!(session, Ok(Some(ref s)) if s.title_source == TitleSource::Default) {
                    return;
                }
                let Some(provider) = deps.providers.get().chain(None).into_iter().next() else {
                    return;
                };
                let generated = provider.complete(request, deps.settings.get().title_timeout).await;
                let title = match generated {
                    Ok(text) => clean_title(&text, first_user.as_deref().unwrap_or("")),
                    Err(err) => {
                        tracing::info!(session_id = %id, code = err.code(), "title generation failed; keeping the default");
                        return;
                    }
                };
                let set = SetTitle { user, id: id.clone(), title, source: TitleSource::Generated };
                if let Err(err) = deps.storage.ask(set).await {
                    tracing::warn!(session_id = %id, error = %err, "could not store the generated title");
                }
            }
            .into_actor(self),
        );
    }
}

/// Tidies a generated title as the original did: no quotes, at most 50 characters, and a fallback
/// from the first message's words when the model's answer is unusable.
pub fn clean_title(raw: &str, first_message: &str) -> String {
    let title = raw.trim().trim_matches(|c| c == '"' || c == '\'').trim();
    let title = title.lines().next().unwrap_or("").trim();
    if title.chars().count() >= 5 && !title.eq_ignore_ascii_case("untitled") {
        return if title.chars().count() > 50 {
            format!("{}...", title.chars().take(47).collect::<String>())
        } else {
            title.to_owned()
        };
    }
    let mut fallback = String::new();
    let mut cut = false;
    for word in first_message.split_whitespace().take(6) {
        if fallback.chars().count() + word.chars().count() + 1 > 40 {
            cut = true;
            break;
        }
        if !fallback.is_empty() {
            fallback.push(' ');
        }
        fallback.push_str(word);
    }
    if fallback.is_empty() {
        return "New Chat".to_owned();
    }
    if cut || first_message.split_whitespace().count() > 6 {
        fallback.push_str("...");
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::clean_title;

    #[test]
    fn titles_are_tidied_like_the_original() {
        assert_eq!(clean_title("\"Disk usage on db1\"", "x"), "Disk usage on db1");
        let long = "a".repeat(60);
        assert_eq!(clean_title(&long, "x").chars().count(), 50);
        assert_eq!(
            clean_title("Hi", "why is my replica lagging behind the primary today"),
            "why is my replica lagging behind..."
        );
        assert_eq!(clean_title("untitled", ""), "New Chat");
    }
}
