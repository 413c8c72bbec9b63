//! The shell of aichat: configuration, the HTTP API with SSE, and the wiring that starts the
//! actors of the `actors` crate.
//!
//! # Layout
//! - [`config`]: defaults < `config.toml` < `AICHAT_*` env < CLI flags, validated at start-up.
//! - [`http`]: the route table under `/v1/chat`, handlers, wire types, and `ApiError`.
//! - [`server`]: starts storage, providers, the session registry and the HTTP server.
//! - [`startup`]: the start-up block of the log.
//! - [`telemetry`]: `tracing` output.
//! - [`demo`]: the demo MCP server (`aichat mcp-demo`) and client (`aichat mcp-client`).

pub mod config;
pub mod demo;
pub mod http;
pub mod registered;
pub mod reload;
pub mod server;
pub mod startup;
pub mod telemetry;

/// Installs the process-wide TLS crypto provider (ring) that every HTTP client (reqwest, rmcp)
/// needs. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    /// The README's architecture section shows the actor map of `actors/src/lib.rs`, word for word.
    #[test]
    fn the_readme_shows_the_actor_map_of_the_core() {
        let root = env!("CARGO_MANIFEST_DIR");
        let lib = std::fs::read_to_string(format!("{root}/actors/src/lib.rs")).unwrap();
        let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
        let doc: Vec<&str> = lib
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .map(|l| l.strip_prefix("//! ").unwrap_or(l.trim_start_matches("//!")))
            .collect();
        let doc = doc.join("\n");
        let map = &doc[doc.find("# Actor map").unwrap()..];
        let shown = map
            .replace("\n# ", "\n### ")
            .replacen("# Actor map", "### Actor map", 1);
        assert!(
            readme.contains(shown.trim_end()),
            "README's architecture section differs from actors/src/lib.rs"
        );
    }
}
