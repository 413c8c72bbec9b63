//! The legacy HTTP+SSE transport of MCP (protocol 2024-11-05), which rmcp 3 no longer has: the
//! client GETs the server's URL as an SSE stream, waits for the `endpoint` event, then POSTs its
//! JSON-RPC messages to that endpoint and reads the server's messages as `message` events of the
//! stream. Built from a channel (the stream's messages) and a sink (the POSTs) as rmcp's
//! `SinkStreamTransport`, so everything above it (handshake, calls, cancel, pings) is the same
//! code as for the other transports. A stream that ends closes the transport; the connection
//! actor then reconnects as it does for any lost connection.

use std::pin::Pin;
use std::time::Duration;

use futures::{Sink, SinkExt, StreamExt};
use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::sink_stream::SinkStreamTransport;

/// How long one POST of a message may take.
const POST_TIMEOUT: Duration = Duration::from_secs(30);

/// A POST the server refused or that did not get through.
#[derive(Debug, thiserror::Error)]
#[error("legacy SSE transport: {0}")]
pub struct SendError(String);

type Outbox = Pin<Box<dyn Sink<TxJsonRpcMessage<RoleClient>, Error = SendError> + Send>>;

/// The transport, ready for `serve`.
pub type LegacySse = SinkStreamTransport<Outbox, futures::channel::mpsc::Receiver<RxJsonRpcMessage<RoleClient>>>;

/// Opens the SSE stream at `url` and waits (at most `timeout`) for the endpoint to POST to. The
/// server's configured headers come with `client` (its default headers).
pub async fn connect(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<LegacySse, String> {
    let request = client.get(url).header(reqwest::header::ACCEPT, "text/event-stream");
    let response = tokio::time::timeout(timeout, request.send())
        .await
        .map_err(|_| format!("no answer from {url} within {timeout:?}"))?
        .map_err(|e| format!("cannot open the SSE stream: {}", crate::cause::chain(&e)))?;
    if !response.status().is_success() {
        return Err(format!("the SSE stream answered HTTP {}", response.status()));
    }
    let base = response.url().clone();
    let mut events = russe::reqwest_0_13::ReqwestExt::sse_stream(response);
    // The first thing the server says is where to send messages.
    let endpoint = tokio::time::timeout(timeout, async {
        while let Some(event) = events.next().await {
            if let Ok(russe::Event::Message(message)) = event
                && message.event.as_deref() == Some("endpoint")
            {
                return base.join(message.data.trim()).map_err(|e| format!("bad endpoint: {e}"));
            }
        }
        Err("the SSE stream ended before it named its endpoint".to_owned())
    })
    .await
    .map_err(|_| format!("no endpoint event within {timeout:?}"))??;

    let (mut inbox, received) = futures::channel::mpsc::channel(64);
    actix_rt::spawn(async move {
        while let Some(event) = events.next().await {
            let Ok(russe::Event::Message(message)) = event else {
                break;
            };
            if message.event.as_deref().is_some_and(|e| e != "message") {
                continue;
            }
            match serde_json::from_str::<RxJsonRpcMessage<RoleClient>>(&message.data) {
                Ok(parsed) => {
                    if inbox.send(parsed).await.is_err() {
                        break;
                    }
                }
                Err(err) => tracing::debug!(error = %err, "legacy SSE: a message that is not JSON-RPC"),
            }
        }
        // Dropping the sender ends the transport's stream: the connection is lost.
    });

    let outbox: Outbox = Box::pin(futures::sink::unfold(
        (client.clone(), endpoint),
        |(client, endpoint), message: TxJsonRpcMessage<RoleClient>| async move {
            let request = client.post(endpoint.clone()).json(&message).timeout(POST_TIMEOUT);
            let response = request.send().await.map_err(|e| SendError(crate::cause::chain(&e)))?;
            if !response.status().is_success() {
                return Err(SendError(format!("the endpoint answered HTTP {}", response.status())));
            }
            Ok((client, endpoint))
        },
    ));
    Ok(SinkStreamTransport::new(outbox, received))
}
