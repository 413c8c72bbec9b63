//! The start-up block: one log entry that says what this server is and what it runs on: version,
//! where it listens and what to open, which configuration file was read (or none, and why),
//! database, cluster node, providers and MCP servers. Never a secret.

use std::fmt::Write;

use actors::mcp::Transport;

use crate::config::Config;
use crate::server::Running;

/// The block's text (several lines; the first says `listening on http://ADDR`).
pub fn block(config: &Config, running: &Running) -> String {
    let addr = running.addr;
    let open = if config.server.ui {
        format!("open http://{addr}/ in a browser to chat")
    } else {
        format!("the chat page is off (server.ui); http://{addr}/v1/chat/health answers")
    };
    let mut text = format!(
        "aichat {} listening on http://{addr} ({open})",
        env!("CARGO_PKG_VERSION")
    );
    let line = |text: &mut String, label: &str, value: &str| {
        let _ = write!(text, "\n  {label:<10} {value}");
    };
    line(&mut text, "config", &config.source.to_string());
    let database = config
        .database
        .target()
        .map_or_else(|_| "(invalid)".to_owned(), |t| t.describe());
    line(&mut text, "database", &database);
    if let Some(node) = &running.node_id {
        let value = format!(
            "{node} (lease {} s; other nodes may share the database)",
            config.cluster.lease_secs
        );
        line(&mut text, "node", &value);
    }
    let providers: Vec<String> = config
        .provider_configs()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let default = if i == 0 { ", default" } else { "" };
            format!("{} ({}, {}{default})", p.name, p.vendor_name(), p.model_name())
        })
        .collect();
    line(&mut text, "providers", &providers.join("; "));
    let servers: Vec<String> = config
        .mcp
        .resolved
        .iter()
        .map(|s| match &s.transport {
            Transport::Stdio { command, args, .. } => {
                let program = std::path::Path::new(command)
                    .file_name()
                    .map_or_else(|| command.clone(), |n| n.to_string_lossy().into_owned());
                format!("{} (stdio: {program} {})", s.name, args.join(" "))
            }
            Transport::StreamableHttp { url, .. } => {
                let shown = url.split('?').next().unwrap_or(url);
                format!("{} ({}: {shown})", s.name, s.transport.kind())
            }
        })
        .collect();
    let servers = if servers.is_empty() {
        "none".to_owned()
    } else {
        servers.join("; ")
    };
    line(&mut text, "MCP", &servers);
    text
}
