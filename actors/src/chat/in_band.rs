//! The original UI's in-band approval protocol: a message that is exactly
//! `[APPROVE_TOOLS:<request id>]` or `[DENY_TOOLS:<request id>]` decides that request.

/// The request id and whether it is approved, when `text` is an in-band decision.
pub(super) fn decision(text: &str) -> Option<(&str, bool)> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?;
    if let Some(id) = inner.strip_prefix("APPROVE_TOOLS:") {
        return Some((id, true));
    }
    inner.strip_prefix("DENY_TOOLS:").map(|id| (id, false))
}

#[cfg(test)]
mod tests {
    use super::decision;

    #[test]
    fn only_the_exact_forms_decide() {
        assert_eq!(decision("[APPROVE_TOOLS:approval_1]"), Some(("approval_1", true)));
        assert_eq!(
            decision("  [DENY_TOOLS:tool_approval_x] "),
            Some(("tool_approval_x", false))
        );
        assert_eq!(decision("please [APPROVE_TOOLS:a]"), None);
        assert_eq!(decision("[APPROVE_TOOLS:a] thanks"), None);
        assert_eq!(decision("[approve_tools:a]"), None);
    }
}
