//! `aichat mcp-client <url>`: a minimal MCP client on the server's own connection code (the
//! supervised connection actor and pool), for the official conformance suite, which runs it with
//! the scenario in `MCP_CONFORMANCE_SCENARIO`.

use std::time::Duration;

use actix::Arbiter;
use actors::mcp::{McpServer, McpServerConfig, McpTools};
use actors::tools::{ToolCatalog, ToolOutcome};
use serde_json::json;

/// Connects to `url`, plays `scenario`, and returns once it is done.
pub async fn run(url: &str, scenario: &str) -> anyhow::Result<()> {
    let spec = McpServerConfig::http("conformance", url)
        .resolve(&|_| None, "")
        .map_err(|e| anyhow::anyhow!("bad server: {e}"))?;
    let server = McpServer::start(spec, &Arbiter::current());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = server.status();
        if status.state == "ready" {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("could not connect: {}", status.last_error.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let call = match scenario {
        "tools_call" => Some(("add_numbers", json!({"a": 5, "b": 3}))),
        "sse-retry" => Some(("test_reconnection", json!({}))),
        // One tool with a malformed header definition must not keep the valid one from use.
        "http-invalid-tool-headers" => Some(("valid_tool", json!({}))),
        // The schema a model would be given for the focal tool, sent back as the server asks:
        // it must arrive with every keyword (`$schema`, `$defs`, composition, conditionals).
        "json-schema-2020-12-preservation" => {
            let catalog = McpTools::new(vec![server.clone()]);
            let tools = catalog.tools();
            let focal = tools
                .iter()
                .find(|t| t.tool == "json_schema_2020_12_tool")
                .ok_or_else(|| anyhow::anyhow!("the focal tool is not offered"))?;
            Some(("json_schema_echo", json!({"schema": focal.input_schema})))
        }
        _ => None,
    };
    if let Some((tool, arguments)) = call {
        let arguments = arguments.as_object().cloned().unwrap_or_default();
        match server.clone().call(tool.to_owned(), arguments, None).await {
            ToolOutcome::Success(text) => tracing::info!(tool, %text, "tool answered"),
            ToolOutcome::Failure(err) => anyhow::bail!("{tool} failed: {err}"),
        }
    }
    Ok(())
}
