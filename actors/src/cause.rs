//! Error text for people and logs: an error's cause chain, each level once, without the Rust type
//! names some libraries print (`Transport [rmcp::transport::worker::…] error`).

/// `err` and its sources joined by `: ` (`error sending request …: client error (Connect): tcp
/// connect error: Connection refused (os error 111)`); a level whose text an earlier one already
/// says is left out, and so are bracketed type names.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut levels: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(level) = next {
        let text = without_type_names(&level.to_string());
        if !text.is_empty() && !levels.iter().any(|seen| seen.contains(&text)) {
            levels.push(text);
        }
        next = level.source();
    }
    levels.join(": ")
}

/// `text` without `[…]` segments that name Rust types (they contain `::`), spaces tidied.
pub fn without_type_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']').map(|i| open + i) else {
            break;
        };
        out.push_str(&rest[..open]);
        let inside = &rest[open..=close];
        if !inside.contains("::") {
            out.push_str(inside);
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Level(&'static str, Option<Box<Level>>);

    impl std::fmt::Display for Level {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Level {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn a_chain_says_each_level_once_without_type_names() {
        let io = Level("Connection refused (os error 111)", None);
        let connect = Level("tcp connect error", Some(Box::new(io)));
        let request = Level("error sending request for url (http://h/mcp)", Some(Box::new(connect)));
        let top = Level(
            "Send message error Transport [rmcp::transport::Worker<a::B>] error: error sending request for url (http://h/mcp)",
            Some(Box::new(request)),
        );
        assert_eq!(
            chain(&top),
            "Send message error Transport error: error sending request for url (http://h/mcp): tcp connect error: \
             Connection refused (os error 111)"
        );
    }
}
