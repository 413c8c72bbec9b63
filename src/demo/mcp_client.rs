//! `aichat mcp-client <url>`: a minimal MCP client on the server's own connection code (the
//! supervised connection actor and pool), for the official conformance suite, which runs it with
//! the scenario in `MCP_CONFORMANCE_SCENARIO` and, for some, the calls to make in
//! `MCP_CONFORMANCE_CONTEXT` (`{"toolCalls": [{"name", "arguments"}]}`).

use std::time::Duration;

use actix::Arbiter;
use actors::elicitation::{ElicitAction, ElicitAnswer, InputReply, Question};
use actors::mcp::{McpServer, McpServerConfig, McpTools};
use actors::tools::{CallHooks, ToolCatalog, ToolOutcome};
use serde_json::json;

/// Connects to `url`, plays `scenario` (with the suite's `context`, if any), and returns once it
/// is done.
pub async fn run(url: &str, scenario: &str, context: &str) -> anyhow::Result<()> {
    let mut spec = McpServerConfig::http("conformance", url)
        .resolve(&|_| None, "")
        .map_err(|e| anyhow::anyhow!("bad server: {e}"))?;
    // A headless client: it may be asked, and accepts every question with the schema's defaults.
    spec.elicitation = true;
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
    let calls: Vec<(&str, serde_json::Value)> = match scenario {
        // Two tools that ask (with and without state), then two that do not: each must carry
        // only its own answers and state.
        "elicitation-sep1034-client-defaults" => vec![("test_client_elicitation_defaults", json!({}))],
        "sep-2322-client-request-state" => [
            "test_mrtr_echo_state",
            "test_mrtr_no_state",
            "test_mrtr_unrelated",
            "test_mrtr_no_result_type",
        ]
        .into_iter()
        .map(|tool| (tool, json!({})))
        .collect(),
        other => one_call(other, &server)?.into_iter().collect(),
    };
    // The calls the suite names (`http-custom-headers`: their annotated arguments travel as
    // `Mcp-Param-*` headers too, which the transport adds).
    let asked: Vec<(String, serde_json::Value)> = serde_json::from_str::<serde_json::Value>(context)
        .ok()
        .and_then(|c| c.get("toolCalls").and_then(serde_json::Value::as_array).cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|call| {
            Some((
                call.get("name")?.as_str()?.to_owned(),
                call.get("arguments").cloned().unwrap_or_default(),
            ))
        })
        .collect();
    let calls = calls
        .into_iter()
        .map(|(tool, arguments)| (tool.to_owned(), arguments))
        .chain(asked);
    for (tool, arguments) in calls {
        let tool = tool.as_str();
        let arguments = arguments.as_object().cloned().unwrap_or_default();
        let text = call_answering(&server, tool, arguments).await?;
        tracing::info!(tool, %text, "tool answered");
    }
    Ok(())
}

/// Calls a tool; each round of questions is answered `accept` with the schemas' defaults (the
/// answers checked as the server's would be), and the call sent again with them.
async fn call_answering(
    server: &McpServer,
    tool: &str,
    arguments: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<String> {
    let mut reply = None;
    for _round in 0..actors::elicitation::MAX_ROUNDS {
        match server
            .clone()
            .call(tool.to_owned(), arguments.clone(), reply.take(), answering_defaults())
            .await
        {
            ToolOutcome::Success(text) => return Ok(text),
            ToolOutcome::Failure(err) => anyhow::bail!("{tool} failed: {err}"),
            ToolOutcome::InputRequired {
                questions,
                request_state,
            } => {
                let accept = ElicitAnswer::without_content(ElicitAction::Accept);
                let mut responses = std::collections::BTreeMap::new();
                for question in questions {
                    let sent = question.check(&accept).map_err(|e| anyhow::anyhow!("{e}"))?;
                    responses.insert(question.key, sent);
                }
                reply = Some(InputReply {
                    responses,
                    request_state,
                });
            }
        }
    }
    anyhow::bail!("{tool} kept asking")
}

/// Hooks that answer every question asked during a call `accept`, with the schema's defaults.
fn answering_defaults() -> CallHooks {
    CallHooks {
        progress: None,
        asker: Some(std::sync::Arc::new(|question: Question| {
            let accept = ElicitAnswer::without_content(ElicitAction::Accept);
            let sent = question.check(&accept).unwrap_or_else(|_| json!({"action": "decline"}));
            Box::pin(async move { sent })
        })),
    }
}

/// The one call a scenario makes, if any.
fn one_call(scenario: &str, server: &McpServer) -> anyhow::Result<Option<(&'static str, serde_json::Value)>> {
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
    Ok(call)
}
