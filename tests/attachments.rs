//! `POST /send-with-files` over real multipart requests: what the mock model is given, what is
//! stored (once per content), the limits and bad bodies (nothing half-stored), history and restart.

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::common::database::{Backend, Database, on_both_backends};
use crate::common::{TestApp, text_of};
use crate::restart::Binary;

/// A 1×1 PNG.
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\x0f\x04\0\x09\xfb\x03\xfd\xe3U\xf2\x9c\0\0\0\0IEND\xaeB`\x82";
pub const PDF: &[u8] = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n";

pub fn part(name: &str, bytes: &[u8], mime: &str) -> Part {
    Part::bytes(bytes.to_vec())
        .file_name(name.to_owned())
        .mime_str(mime)
        .unwrap()
}

/// `POST /send-with-files[?streaming=true]` as user 1 with `message`, an optional session, and
/// the files as `file0..fileN`.
pub async fn send_files(
    app: &TestApp,
    message: Option<&str>,
    session: Option<&str>,
    files: Vec<Part>,
    streaming: bool,
) -> (StatusCode, Value) {
    let mut form = Form::new();
    if let Some(message) = message {
        form = form.text("message", message.to_owned());
    }
    if let Some(session) = session {
        form = form.text("session_id", session.to_owned());
    }
    for (i, file) in files.into_iter().enumerate() {
        form = form.part(format!("file{i}"), file);
    }
    let query = if streaming { "?streaming=true" } else { "" };
    let resp = app
        .client
        .post(app.url(&format!("/send-with-files{query}")))
        .header("X-User-ID", "1")
        .multipart(form)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap_or(Value::Null))
}

fn count(db: &str, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[actix_web::test]
async fn files_reach_the_model_are_stored_once_and_stay_in_the_context() {
    let app = TestApp::spawn().await;
    let files = vec![
        part("pixel.png", PNG, "image/png"),
        part("notes.txt", b"hello notes", "text/plain"),
        part("main.rs", b"fn main() {}", "application/octet-stream"),
    ];
    let (status, reply) = send_files(&app, Some("look at these"), None, files, false).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let content = reply["message"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("Mock streaming response to: 'look at these'"),
        "{content}"
    );
    assert!(
        content.ends_with(&format!(
            " Attachments: pixel.png (image/png, {} bytes), notes.txt (text/plain, 11 bytes), main.rs (text/plain, 12 bytes)",
            PNG.len()
        )),
        "{content}"
    );
    let session = reply["session_id"].as_str().unwrap().to_owned();

    // Stored with the user message, in the original's keys.
    let (_, history) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let user = &history["messages"][0];
    assert_eq!(user["role"], "user");
    let stored = user["attachments"].as_array().unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0]["filename"], "pixel.png");
    assert_eq!(stored[0]["mime_type"], "image/png");
    assert_eq!(stored[0]["size"], json!(PNG.len()));
    assert_eq!(stored[0]["content"], json!(base64(PNG)));
    assert!(stored[0]["id"].as_str().unwrap().starts_with("attachment_"));

    // Later turns still have them (history), streamed this time.
    let (status, started) = send_files(&app, Some("/mock attachments"), Some(&session), vec![], true).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["session_id"], json!(session));
    let events = app.sse(1, started["stream_id"].as_str().unwrap(), None).await;
    assert!(
        text_of(&events).starts_with("Attachments in context: pixel.png (image/png"),
        "{}",
        text_of(&events)
    );

    // The same file again, in another session: its content is stored once.
    let (status, again) = send_files(
        &app,
        Some("again"),
        None,
        vec![part("copy.png", PNG, "image/png")],
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let db = app.path("chat.db");
    assert_eq!(count(&db, "chat_attachments"), 4);
    assert_eq!(
        count(&db, "attachment_blobs"),
        3,
        "pixel.png and copy.png share one blob"
    );
    // Deleting the sessions drops the contents nobody refers to.
    app.delete(&format!("/sessions/{session}"), 1).await;
    assert_eq!(count(&db, "attachment_blobs"), 1);
    app.delete(&format!("/sessions/{}", again["session_id"].as_str().unwrap()), 1)
        .await;
    assert_eq!(count(&db, "attachment_blobs"), 0);
}

#[actix_web::test]
async fn refused_uploads_store_nothing_and_say_why() {
    let app = TestApp::spawn_with(|c| {
        c.attachments.max_file_bytes = 1000;
        c.attachments.max_total_bytes = 1500;
        c.attachments.max_files = 2;
    })
    .await;
    let big = vec![b'a'; 1001];
    let half = vec![b'b'; 800];
    let cases: Vec<(Option<&str>, Vec<Part>, StatusCode, &str)> = vec![
        (
            None,
            vec![part("a.txt", b"x", "text/plain")],
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        (
            Some("hi"),
            vec![part("big.txt", &big, "text/plain")],
            StatusCode::PAYLOAD_TOO_LARGE,
            "attachment_too_large",
        ),
        (
            Some("hi"),
            vec![part("a.txt", &half, "text/plain"), part("b.txt", &half, "text/plain")],
            StatusCode::PAYLOAD_TOO_LARGE,
            "attachments_too_large",
        ),
        (
            Some("hi"),
            vec![
                part("1.txt", b"1", "text/plain"),
                part("2.txt", b"2", "text/plain"),
                part("3.txt", b"3", "text/plain"),
            ],
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_attachments",
        ),
        (
            Some("hi"),
            vec![part("a.zip", b"PK\x03\x04", "application/zip")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_attachment",
        ),
        (
            Some("hi"),
            vec![part("fake.png", b"not a png", "image/png")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_attachment",
        ),
        (
            Some("[APPROVE_TOOLS:approval_x]"),
            vec![part("a.txt", b"x", "text/plain")],
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
    ];
    for (message, files, status, code) in cases {
        let (got, body) = send_files(&app, message, None, files, false).await;
        assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // A part named file… that is not a file, and a body that is no multipart.
    let not_a_file = Form::new().text("message", "hi").text("file0", "plain text");
    for form in [not_a_file] {
        let resp = app
            .client
            .post(app.url("/send-with-files"))
            .header("X-User-ID", "1")
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "invalid_multipart", "{body}");
    }
    for (content_type, body) in [
        ("multipart/form-data; boundary=xyz", "--xyz\r\nbroken"),
        ("application/json", r#"{"message": "hi"}"#),
    ] {
        let resp = app
            .client
            .post(app.url("/send-with-files"))
            .header("X-User-ID", "1")
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{content_type}");
    }
    let (_, sessions) = app.get("/sessions", 1).await;
    assert_eq!(sessions["sessions"], json!([]), "nothing was stored");
    let db = app.path("chat.db");
    assert_eq!(count(&db, "chat_messages"), 0);
    assert_eq!(count(&db, "attachment_blobs"), 0);
}

on_both_backends!(attachments_survive_a_restart);

async fn attachments_survive_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh(backend, dir.path());
    let first = Binary::start_on(&db, "", &[]);
    let app = TestApp::client_for(&first.base);
    let (status, reply) = send_files(
        &app,
        Some("keep this"),
        None,
        vec![part("doc.pdf", PDF, "application/pdf")],
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let session = reply["session_id"].as_str().unwrap().to_owned();
    first.kill();
    let second = Binary::start_on(&db, "", &[]);
    let app = TestApp::client_for(&second.base);
    let (_, history) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    assert_eq!(history["messages"][0]["attachments"][0]["content"], json!(base64(PDF)));
    let (_, events) = app.turn(1, "/mock attachments", Some(&session)).await;
    assert_eq!(
        text_of(&events),
        format!("Attachments in context: doc.pdf (application/pdf, {} bytes)", PDF.len())
    );
    second.kill();
}
