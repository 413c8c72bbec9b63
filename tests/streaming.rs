//! Streamed turns over real SSE: event order and ids, late and concurrent readers, the tool loop
//! without MCP, provider crashes, and the event log read back from storage.

use serde_json::json;

use crate::common::{TestApp, eventually, text_of};

#[actix_web::test]
async fn a_streamed_turn_has_ordered_ids_and_ends_with_done() {
    let app = TestApp::spawn().await;
    let (session, events) = app.turn(7, "hello world", None).await;
    assert_eq!(events.len(), 9, "8 text chunks and done: {events:?}");
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.id, Some(i as u64 + 1), "ids increase from 1");
        assert_eq!(event.event.as_deref(), Some("message"));
        assert_eq!(
            event.data["session_id"],
            json!(session),
            "every event carries the real session id"
        );
    }
    assert_eq!(
        text_of(&events),
        "Mock streaming response to: 'hello world'. Available tools: 0"
    );
    assert_eq!(
        events.last().unwrap().data,
        json!({ "type": "done", "session_id": session, "done": true })
    );
    let (_, messages) = app.get(&format!("/sessions/{session}/messages"), 7).await;
    assert_eq!(
        messages["messages"][1]["content"],
        "Mock streaming response to: 'hello world'. Available tools: 0"
    );
}

#[actix_web::test]
async fn late_and_concurrent_readers_see_every_event() {
    let app = TestApp::spawn_with(|c| c.mock.chunk_delay_ms = 20).await;
    let (stream_id, _) = app.start_stream(1, "a b c", None).await;
    let (first, second) = futures::join!(app.sse(1, &stream_id, None), app.sse(1, &stream_id, None));
    assert_eq!(first.len(), 9);
    let ids = |events: &[crate::common::SseEvent]| events.iter().map(|e| (e.id, e.data.clone())).collect::<Vec<_>>();
    assert_eq!(
        ids(&first),
        ids(&second),
        "two readers on one stream see the same events"
    );

    // A reader that connects after the turn ended still gets everything from the first event.
    let late = app.sse(1, &stream_id, None).await;
    assert_eq!(ids(&late), ids(&first));
    // And one that says where it stopped gets the rest.
    let rest = app.sse(1, &stream_id, Some(6)).await;
    assert_eq!(ids(&rest), ids(&first)[6..].to_vec());
}

#[actix_web::test]
async fn tool_calls_without_servers_fail_alone_and_the_loop_finishes() {
    let app = TestApp::spawn().await;
    let script =
        r#"/mock tools [{"name":"alpha","arguments":{"n":1}},{"name":"beta","arguments":{"n":2}},{"name":"gamma"}]"#;
    let (session, events) = app.turn(1, script, None).await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e.data["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("tool_execution"));
    assert_eq!(kinds.last().map(String::as_str), Some("done"));
    let executions = events[0].data["tool_executions"].as_array().unwrap();
    let names: Vec<_> = executions.iter().map(|e| e["tool_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"], "call order");
    assert_eq!(executions[1]["arguments"], r#"{"n":2}"#);
    assert_eq!(executions[1]["error"], "unknown tool: beta");
    assert_eq!(events[0].data["content"], "Executed 3 tool(s) (partially failed)");
    assert_eq!(
        text_of(&events),
        "Tool results:\n1. alpha: Error executing tool: unknown tool: alpha\n2. beta: Error executing tool: unknown tool: beta\n3. gamma: Error executing tool: unknown tool: gamma"
    );
    let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let roles: Vec<_> = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "tool", "tool", "assistant"]);
    assert_eq!(stored["messages"][1]["tool_calls"].as_array().unwrap().len(), 3);
    assert_eq!(stored["messages"][3]["tool_executions"][0]["tool_name"], "beta");
}

#[actix_web::test]
async fn a_provider_actor_that_dies_fails_its_turn_and_the_next_turn_works() {
    let app = TestApp::spawn().await;
    for (script, code) in [("/mock panic", "provider_crashed"), ("/mock die", "provider_crashed")] {
        let (session, events) = app.turn(1, script, None).await;
        let last = &events.last().unwrap().data;
        assert_eq!(last["type"], "error", "{script}: {events:?}");
        assert_eq!(last["code"], code);
        let (_, events) = app.turn(1, "still there?", Some(&session)).await;
        assert_eq!(events.last().unwrap().data["type"], "done", "after {script}");
        assert_eq!(
            text_of(&events),
            "Mock streaming response to: 'still there?'. Available tools: 0"
        );
    }
}

/// A provider crash is the crashing request's alone: the streams the provider actor already
/// carries go on to `done` while it restarts with a fresh adapter.
#[actix_web::test]
async fn a_provider_crash_fails_only_its_own_stream() {
    let app = TestApp::spawn_with(|c| c.mock.chunk_delay_ms = 20).await;
    let mut running = Vec::new();
    for user in 1..=20 {
        let (stream_id, _) = app.start_stream(user, "/mock words 150", None).await;
        running.push((user, stream_id));
    }
    // Every stream is under way before the crashes (the answers take 3 s at 20 ms a word).
    for (user, stream_id) in &running {
        let first = app.sse_events(*user, stream_id, None, 1).await;
        assert_eq!(first[0].data["type"], "message");
    }
    for script in ["/mock panic", "/mock die"] {
        let (_, events) = app.turn(21, script, None).await;
        assert_eq!(events.last().unwrap().data["code"], "provider_crashed", "{script}");
    }
    for (user, stream_id) in &running {
        let events = app.sse(*user, stream_id, None).await;
        let last = &events.last().unwrap().data;
        assert_eq!(last["type"], "done", "user {user}: {last}");
        assert!(text_of(&events).ends_with("w150"), "user {user}: the whole answer");
    }
    let (_, events) = app.turn(21, "after the crashes", None).await;
    assert_eq!(events.last().unwrap().data["type"], "done");
}

#[actix_web::test]
async fn finished_streams_are_served_from_storage_after_leaving_memory() {
    let app = TestApp::spawn_with(|c| c.server.stream_retention_secs = 1).await;
    let (stream_id, _) = app.start_stream(1, "remember me", None).await;
    let live = app.sse(1, &stream_id, None).await;
    eventually("the stream to leave memory", || async {
        app.request(reqwest::Method::GET, "/health", None, None).await.1["streams_in_memory"] == 0
    })
    .await;
    let stored = app.sse(1, &stream_id, None).await;
    let view = |events: &[crate::common::SseEvent]| events.iter().map(|e| (e.id, e.data.clone())).collect::<Vec<_>>();
    assert_eq!(view(&stored), view(&live));
    let (status, _) = app.get(&format!("/stream/{stream_id}"), 2).await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
}

/// The original's single-request `GET /stream?message=`: the turn streams on the same response,
/// in the same events; its headers name the stream, which `/stream/{id}` resumes byte-exact.
#[actix_web::test]
async fn the_legacy_single_request_stream_works_and_resumes() {
    use futures::StreamExt;
    use russe::reqwest_0_13::ReqwestExt;
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/stream?message=old%20school"))
        .header("X-User-ID", "4")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let stream_id = resp.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let session = resp.headers()["x-session-id"].to_str().unwrap().to_owned();
    let mut frames = resp.sse_stream();
    let mut events = Vec::new();
    while let Some(frame) = tokio::time::timeout(crate::common::TIMEOUT, frames.next())
        .await
        .unwrap()
    {
        if let russe::Event::Message(m) = frame.unwrap() {
            assert_eq!(m.event.as_deref(), Some("message"));
            events.push((
                m.id.clone(),
                serde_json::from_str::<serde_json::Value>(&m.data).unwrap(),
            ));
        }
    }
    let text: String = events.iter().filter_map(|(_, d)| d["content"].as_str()).collect();
    assert_eq!(text, "Mock streaming response to: 'old school'. Available tools: 0");
    assert_eq!(events.last().unwrap().1["type"], "done");
    assert_eq!(events[0].1["session_id"], json!(session));
    let resumed = app.sse(4, &stream_id, Some(3)).await;
    assert_eq!(resumed.len(), events.len() - 3);
    assert_eq!(resumed[0].data, events[3].1);
    // The same session continues through the legacy route; a missing message is a 400.
    let (status, _) = app
        .request(
            reqwest::Method::GET,
            &format!("/stream?session_id={session}&message=%2Fmock%20context"),
            Some("4"),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let (status, body) = app
        .request(reqwest::Method::GET, "/stream?session_id=x", Some("4"), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (reqwest::StatusCode::BAD_REQUEST, Some("missing_field"))
    );
    let (status, _) = app
        .request(reqwest::Method::GET, "/stream?message=hi", Some("0"), None)
        .await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
    let (_, history) = app.get(&format!("/sessions/{session}/messages"), 4).await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 4);
}
