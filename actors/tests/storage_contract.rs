//! The storage contract: one suite, run unchanged on both backends (a fresh SQLite file, a fresh
//! PostgreSQL database on the test cluster `scripts/test-postgres.sh` starts), through the storage
//! actor's messages: sessions, pagination, ordering, isolation between users, turn writes and
//! their transactions, attachments, streams and replay, approvals and grants, restart.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use actors::approval::{ApprovalRecord, ApprovalStatus, BatchCall, CallOutcome, CallState, Remember};
use actors::attachment::Attachment;
use actors::elicitation::{InputState, Question};
use actors::ids::{StreamId, UserId};
use actors::model::{ApprovalRequestView, ChatMessage, Role, Session, TitleSource, ToolCall, ToolExecution, Usage};
use actors::storage::{
    AdminRecord, ChatStore, ClearMessages, CreateSession, DeleteAdminRecord, DeleteGrant, DeleteSession, Fence,
    GetApproval, GetSession, ListAdminRecords, ListApprovals, ListGrants, ListMessages, ListSessions, LoadStream, Page,
    PendingApproval, Ping, PostgresOptions, PostgresStore, PutAdminRecord, SetTitle, SqliteStore, Storage,
    StorageError, StoreAnswer, StoredEvent, StreamRecord, StreamStatus, TurnWrite,
};
use chrono::Duration as Span;

/// Where a backend keeps its data; `open` may be called again after the last store is dropped.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Backend {
    fn sqlite() -> Self {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A fresh database on the test cluster.
    #[expect(
        clippy::disallowed_methods,
        reason = "the test script hands the cluster over in the environment"
    )]
    fn postgres() -> Self {
        let url = std::env::var("AICHAT_TEST_POSTGRES_URL").expect(
            "AICHAT_TEST_POSTGRES_URL names the test cluster: run the tests with scripts/test.sh \
             (it starts one with scripts/test-postgres.sh)",
        );
        let name = format!("contract_{}", uuid_like());
        plain(|| {
            let mut admin = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
            admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        });
        Backend::Postgres(with_database(&url, &name))
    }

    fn open(&self) -> Arc<dyn ChatStore> {
        self.try_open().unwrap()
    }

    fn try_open(&self) -> Result<Arc<dyn ChatStore>, StorageError> {
        plain(|| self.open_here())
    }

    fn open_here(&self) -> Result<Arc<dyn ChatStore>, StorageError> {
        Ok(match self {
            Backend::Sqlite(dir) => Arc::new(SqliteStore::open(&dir.path().join("chat.db"), 4)?),
            Backend::Postgres(url) => Arc::new(PostgresStore::open(
                url,
                &PostgresOptions {
                    password: None,
                    pool_size: 4,
                    ..PostgresOptions::default()
                },
            )?),
        })
    }
}

/// Runs blocking store calls on a plain thread: the PostgreSQL client blocks on its own runtime,
/// which tokio refuses inside the test's async task.
fn plain<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(work).join().unwrap())
}

fn uuid_like() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}?{query}")
}

fn storage(store: Arc<dyn ChatStore>) -> Storage {
    Storage::start(store, 2, Duration::from_secs(30))
}

fn user(n: i64) -> UserId {
    UserId::new(n).unwrap()
}

async fn new_session(storage: &Storage, owner: i64, title: &str) -> Session {
    let session = Session::new(user(owner), title.into(), TitleSource::Default);
    storage
        .ask(CreateSession {
            session: session.clone(),
        })
        .await
        .unwrap();
    session
}

fn says(session: &Session, texts: &[&str]) -> TurnWrite {
    TurnWrite {
        messages: texts.iter().map(|t| ChatMessage::new(Role::User, *t)).collect(),
        session_id: Some(session.id.clone()),
        ..TurnWrite::default()
    }
}

async fn contents(storage: &Storage, owner: i64, session: &Session, page: Option<Page>) -> Vec<String> {
    storage
        .ask(ListMessages {
            user: user(owner),
            id: session.id.clone(),
            page,
        })
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect()
}

fn stream_of(session: &Session) -> StreamRecord {
    StreamRecord {
        id: StreamId::generate(),
        user_id: session.user_id,
        session_id: session.id.clone(),
        status: StreamStatus::Running,
        created_at: actors::model::now(),
    }
}

fn event(seq: u64, data: &str) -> StoredEvent {
    StoredEvent { seq, data: data.into() }
}

fn call(id: &str, name: &str) -> ToolCall {
    ToolCall::function(id, name, r#"{"x":1}"#.into())
}

fn approval(session: &Session, stream: &StreamRecord, ids: &[&str]) -> ApprovalRecord {
    let now = actors::model::now();
    ApprovalRecord {
        request_id: format!("approval_{}", uuid_like()),
        user_id: session.user_id,
        session_id: session.id.clone(),
        stream_id: stream.id.clone(),
        calls: ids
            .iter()
            .map(|id| BatchCall::new(call(id, "demo__echo"), CallState::Pending))
            .collect(),
        status: ApprovalStatus::Pending,
        created_at: now,
        expires_at: now + Span::minutes(5),
        decided_by: None,
        decided_at: None,
    }
}

// ---- the contract ----

async fn sessions_list_newest_first_with_a_total_and_stay_with_their_owner(backend: Backend) {
    let storage = storage(backend.open());
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(new_session(&storage, 1, &format!("s{i}")).await);
    }
    let theirs = new_session(&storage, 2, "theirs").await;
    // Activity moves a session to the front.
    storage.write(says(&made[1], &["hello"])).await.unwrap();
    let (page, total) = storage
        .ask(ListSessions {
            user: user(1),
            page: Page { limit: 2, offset: 0 },
        })
        .await
        .unwrap();
    assert_eq!(total, 5);
    assert_eq!(page.len(), 2);
    assert_eq!(
        page[0].id, made[1].id,
        "the session with the newest activity comes first"
    );
    let (rest, _) = storage
        .ask(ListSessions {
            user: user(1),
            page: Page { limit: 10, offset: 2 },
        })
        .await
        .unwrap();
    assert_eq!(rest.len(), 3);
    let (past_the_end, total) = storage
        .ask(ListSessions {
            user: user(1),
            page: Page {
                limit: 10,
                offset: 1_000,
            },
        })
        .await
        .unwrap();
    assert!(past_the_end.is_empty());
    assert_eq!(total, 5);

    // Another user sees, renames, clears and deletes nothing of user 1's, and the reverse.
    let stored = storage
        .ask(GetSession {
            user: user(1),
            id: made[0].id.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, made[0], "a session reads back as it was written");
    for id in [&made[0].id, &made[1].id] {
        assert!(
            storage
                .ask(GetSession {
                    user: user(2),
                    id: id.clone()
                })
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            storage
                .ask(ListMessages {
                    user: user(2),
                    id: id.clone(),
                    page: None
                })
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            !storage
                .ask(SetTitle {
                    user: user(2),
                    id: id.clone(),
                    title: "x".into(),
                    source: TitleSource::User
                })
                .await
                .unwrap()
        );
        assert!(
            !storage
                .ask(ClearMessages {
                    user: user(2),
                    id: id.clone()
                })
                .await
                .unwrap()
        );
        assert!(
            !storage
                .ask(DeleteSession {
                    user: user(2),
                    id: id.clone()
                })
                .await
                .unwrap()
        );
    }
    assert_eq!(contents(&storage, 1, &made[1], None).await, ["hello"]);
    let (theirs_listed, total) = storage
        .ask(ListSessions {
            user: user(2),
            page: Page { limit: 10, offset: 0 },
        })
        .await
        .unwrap();
    assert_eq!((theirs_listed.len(), total), (1, 1));
    assert_eq!(theirs_listed[0].id, theirs.id);
    storage.ask(Ping {}).await.unwrap();
}

async fn titles_set_by_the_person_are_never_replaced_by_generated_ones(backend: Backend) {
    let storage = storage(backend.open());
    let session = new_session(&storage, 1, "Chat").await;
    let rename = |title: &str, source| SetTitle {
        user: user(1),
        id: session.id.clone(),
        title: title.into(),
        source,
    };
    assert!(storage.ask(rename("Generated", TitleSource::Generated)).await.unwrap());
    assert!(
        !storage.ask(rename("Again", TitleSource::Generated)).await.unwrap(),
        "a generated title replaces only the default one"
    );
    assert!(storage.ask(rename("Mine", TitleSource::User)).await.unwrap());
    assert!(!storage.ask(rename("Auto", TitleSource::Generated)).await.unwrap());
    let long = "t".repeat(1_000);
    assert!(storage.ask(rename(&long, TitleSource::User)).await.unwrap());
    let stored = storage
        .ask(GetSession {
            user: user(1),
            id: session.id.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.title, long);
    assert_eq!(stored.title_source, TitleSource::User);
}

async fn messages_keep_their_order_fields_and_attachments_and_page(backend: Backend) {
    let storage = storage(backend.open());
    let session = new_session(&storage, 1, "Chat").await;
    let mut asked = ChatMessage::new(Role::User, "look at these");
    asked.attachments = vec![
        Attachment {
            id: "attachment_1".into(),
            filename: "a.png".into(),
            mime_type: "image/png".into(),
            size: 3,
            content: "AAAA".into(),
        },
        Attachment {
            id: "attachment_2".into(),
            filename: "b.txt".into(),
            mime_type: "text/plain".into(),
            size: 2,
            content: "aGk=".into(),
        },
    ];
    let mut answer = ChatMessage::new(Role::Assistant, "");
    answer.tool_calls = vec![call("call_1", "demo__echo"), call("call_2", "demo__add")];
    answer.usage = Some(Usage {
        input_tokens: 12,
        output_tokens: 34,
    });
    let now = actors::model::now();
    let execution = ToolExecution {
        id: "call_1".into(),
        tool_name: "demo__echo".into(),
        arguments: r#"{"x":1}"#.into(),
        result: "ünïcödé ✓ and \"quotes\"".into(),
        error: None,
        start_time: now,
        end_time: now,
        duration_ms: 0,
    };
    let result = ChatMessage::tool_result(execution, "for the model".into());
    let mut partial = ChatMessage::new(Role::Assistant, "half an ans");
    partial.status = Some("cancelled".into());
    let written = vec![asked, answer, result, partial];
    storage
        .write(TurnWrite {
            messages: written.clone(),
            session_id: Some(session.id.clone()),
            ..TurnWrite::default()
        })
        .await
        .unwrap();
    storage.write(says(&session, &["5", "6", "7"])).await.unwrap();

    let all = storage
        .ask(ListMessages {
            user: user(1),
            id: session.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(
        all[..4],
        written[..],
        "every field and attachment reads back as written"
    );
    assert_eq!(
        contents(&storage, 1, &session, Some(Page { limit: 2, offset: 3 })).await,
        ["half an ans", "5"]
    );
    let page = storage
        .ask(ListMessages {
            user: user(1),
            id: session.id.clone(),
            page: Some(Page { limit: 1, offset: 0 }),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page[0].attachments.len(), 2, "a page carries its messages' attachments");
    assert!(
        contents(&storage, 1, &session, Some(Page { limit: 5, offset: 100 }))
            .await
            .is_empty()
    );

    assert!(
        storage
            .ask(ClearMessages {
                user: user(1),
                id: session.id.clone()
            })
            .await
            .unwrap()
    );
    assert!(contents(&storage, 1, &session, None).await.is_empty());
    // The session stays and takes new messages after the cleared ones.
    storage.write(says(&session, &["after"])).await.unwrap();
    assert_eq!(contents(&storage, 1, &session, None).await, ["after"]);
}

async fn a_batch_commits_each_write_whole_and_a_failing_one_alone(backend: Backend) {
    let store = backend.open();
    let session = Session::new(user(1), "Chat".into(), TitleSource::Default);
    plain(|| store.create_session(&session)).unwrap();
    let stream = stream_of(&session);
    // Settling a request that was never stored conflicts: its message must not be stored either.
    let mut unknown = approval(&session, &stream, &["c1"]);
    unknown.status = ApprovalStatus::Approved;
    let conflicting = TurnWrite {
        settle_approval: Some(unknown),
        ..says(&session, &["lost with its write"])
    };
    let first = TurnWrite {
        new_stream: Some(stream.clone()),
        ..says(&session, &["first"])
    };
    // A stream id stored twice breaks a constraint: the database refuses it, alone.
    let duplicate = TurnWrite {
        new_stream: Some(stream.clone()),
        ..says(&session, &["lost with the duplicate"])
    };
    let results = plain(|| store.write_turns(&[first, conflicting, says(&session, &["third"]), duplicate]));
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(StorageError::Conflict(_))), "{results:?}");
    assert!(results[3].is_err(), "{results:?}");
    let storage = storage(store);
    assert_eq!(contents(&storage, 1, &session, None).await, ["first", "third"]);
}

async fn a_failing_write_leaves_nothing_behind(backend: Backend) {
    let storage = storage(backend.open());
    let session = new_session(&storage, 1, "Chat").await;
    let stream = stream_of(&session);
    let mut unknown = approval(&session, &stream, &["c1"]);
    unknown.status = ApprovalStatus::Denied;
    // A new stream, messages, events and a conflicting settle, all in one write.
    let err = storage
        .write(TurnWrite {
            new_stream: Some(stream.clone()),
            stream_id: Some(stream.id.clone()),
            events: vec![event(1, "{}")],
            settle_approval: Some(unknown),
            ..says(&session, &["never stored"])
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Conflict(_)), "{err}");
    assert!(contents(&storage, 1, &session, None).await.is_empty());
    let loaded = storage
        .ask(LoadStream {
            user: user(1),
            id: stream.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap();
    assert!(loaded.is_none(), "the stream of a failed write was not created");
}

async fn stream_events_replay_in_order_after_any_id_for_their_owner_only(backend: Backend) {
    let storage = storage(backend.open());
    let session = new_session(&storage, 1, "Chat").await;
    let stream = stream_of(&session);
    storage
        .write(TurnWrite {
            new_stream: Some(stream.clone()),
            stream_id: Some(stream.id.clone()),
            events: (1..=3).map(|i| event(i, &format!(r#"{{"n":{i}}}"#))).collect(),
            ..TurnWrite::default()
        })
        .await
        .unwrap();
    // Events stored twice (a retried write) are kept once; the log may have gaps.
    storage
        .write(TurnWrite {
            stream_id: Some(stream.id.clone()),
            events: vec![
                event(3, r#"{"n":3}"#),
                event(4, r#"{"n":4}"#),
                event(132, r#"{"end":true}"#),
            ],
            finish: Some(StreamStatus::Done),
            ..TurnWrite::default()
        })
        .await
        .unwrap();
    let load = |after_seq, owner| LoadStream {
        user: user(owner),
        id: stream.id.clone(),
        after_seq,
    };
    let (record, events) = storage.ask(load(0, 1)).await.unwrap().unwrap();
    assert_eq!(record.status, StreamStatus::Done);
    assert_eq!(record.session_id, session.id);
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 132]);
    assert_eq!(events[0].data, r#"{"n":1}"#, "an event replays byte for byte");
    let (_, after) = storage.ask(load(3, 1)).await.unwrap().unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 132]);
    let (_, none) = storage.ask(load(132, 1)).await.unwrap().unwrap();
    assert!(none.is_empty());
    assert!(
        storage.ask(load(0, 2)).await.unwrap().is_none(),
        "another user's stream is not found"
    );
}

async fn approvals_settle_once_and_are_found_by_id_history_row_and_session(backend: Backend) {
    let storage = storage(backend.open());
    let session = new_session(&storage, 1, "Chat").await;
    let other = new_session(&storage, 2, "Other").await;
    let stream = stream_of(&session);
    let request = approval(&session, &stream, &["c1", "c2"]);
    let mut row = ChatMessage::new(Role::ToolApproval, "approve?");
    row.approval_request = Some(ApprovalRequestView {
        request_id: request.request_id.clone(),
        tool_calls: request.calls.iter().map(|c| c.call.clone()).collect(),
        status: None,
        processed: None,
    });
    storage
        .write(TurnWrite {
            new_stream: Some(stream.clone()),
            new_approval: Some(request.clone()),
            messages: vec![row.clone()],
            session_id: Some(session.id.clone()),
            ..TurnWrite::default()
        })
        .await
        .unwrap();
    let get = |id: &str, owner| GetApproval {
        user: user(owner),
        request_id: id.into(),
    };
    for id in [
        request.request_id.clone(),
        row.id.clone(),
        format!("historical_{}", row.id),
    ] {
        let found = storage.ask(get(&id, 1)).await.unwrap();
        assert_eq!(found.as_ref(), Some(&request), "found by {id}");
        assert!(storage.ask(get(&id, 2)).await.unwrap().is_none(), "not user 2's");
    }
    let pending = storage
        .ask(PendingApproval {
            user: user(1),
            session: session.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(pending.as_ref(), Some(&request));
    assert!(
        storage
            .ask(PendingApproval {
                user: user(2),
                session: other.id.clone()
            })
            .await
            .unwrap()
            .is_none()
    );
    let messages = storage
        .ask(ListMessages {
            user: user(1),
            id: session.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .unwrap();
    let view = messages[0].approval_request.as_ref().unwrap();
    assert_eq!((view.status.as_deref(), view.processed), (Some("pending"), Some(false)));

    // Decide: one approved and running, one denied.
    let mut decided = request.clone();
    decided.calls[0].state = CallState::Approved { by: "user:1".into() };
    decided.calls[0].outcome = Some(CallOutcome::Running);
    decided.calls[1].state = CallState::Denied { by: "user:1".into() };
    decided.status = ApprovalStatus::PartiallyApproved;
    decided.decided_by = Some("user:1".into());
    decided.decided_at = Some(actors::model::now());
    storage
        .write(TurnWrite {
            settle_approval: Some(decided.clone()),
            new_grants: vec![
                (user(1), Some(session.id.clone()), "demo__echo".into()),
                (user(1), None, "demo__add".into()),
            ],
            ..TurnWrite::default()
        })
        .await
        .unwrap();
    let again = storage
        .write(TurnWrite {
            settle_approval: Some(decided.clone()),
            ..TurnWrite::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(again, StorageError::Conflict(_)),
        "a request is settled once: {again}"
    );
    assert_eq!(
        storage.ask(get(&request.request_id, 1)).await.unwrap(),
        Some(decided.clone())
    );
    let status = |s: Option<&str>| ListApprovals {
        user: user(1),
        status: s.map(str::to_owned),
    };
    assert!(storage.ask(status(Some("pending"))).await.unwrap().is_empty());
    assert_eq!(storage.ask(status(Some("partially_approved"))).await.unwrap().len(), 1);
    assert_eq!(storage.ask(status(None)).await.unwrap().len(), 1);
    let messages = storage
        .ask(ListMessages {
            user: user(1),
            id: session.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .unwrap();
    let view = messages[0].approval_request.as_ref().unwrap();
    assert_eq!(
        (view.status.as_deref(), view.processed),
        (Some("partially_approved"), Some(true))
    );

    let mut done = decided.clone();
    done.calls[0].outcome = Some(CallOutcome::Done);
    storage
        .write(TurnWrite {
            call_outcomes: Some(done.clone()),
            ..TurnWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(storage.ask(get(&request.request_id, 1)).await.unwrap(), Some(done));

    // Grants: listed for their owner, revoked only by them.
    let grants = storage.ask(ListGrants { user: user(1) }).await.unwrap();
    assert_eq!(grants.len(), 2);
    assert!(
        grants
            .iter()
            .any(|g| g.scope == Remember::Session && g.session_id.as_ref() == Some(&session.id))
    );
    assert!(
        grants
            .iter()
            .any(|g| g.scope == Remember::User && g.session_id.is_none())
    );
    assert!(storage.ask(ListGrants { user: user(2) }).await.unwrap().is_empty());
    let revoke = |owner| DeleteGrant {
        user: user(owner),
        id: grants[0].id.clone(),
    };
    assert!(!storage.ask(revoke(2)).await.unwrap());
    assert!(storage.ask(revoke(1)).await.unwrap());
    assert!(!storage.ask(revoke(1)).await.unwrap());
    assert_eq!(storage.ask(ListGrants { user: user(1) }).await.unwrap().len(), 1);
}

async fn an_expired_pending_request_reads_expired_in_history(backend: Backend) {
    let storage = storage(backend.open());
    let session = new_session(&storage, 1, "Chat").await;
    let stream = stream_of(&session);
    let mut request = approval(&session, &stream, &["c1"]);
    request.expires_at = request.created_at - Span::seconds(1);
    let mut row = ChatMessage::new(Role::ToolApproval, "approve?");
    row.approval_request = Some(ApprovalRequestView {
        request_id: request.request_id.clone(),
        tool_calls: vec![call("c1", "demo__echo")],
        status: None,
        processed: None,
    });
    storage
        .write(TurnWrite {
            new_stream: Some(stream),
            new_approval: Some(request),
            messages: vec![row],
            session_id: Some(session.id.clone()),
            ..TurnWrite::default()
        })
        .await
        .unwrap();
    let messages = storage
        .ask(ListMessages {
            user: user(1),
            id: session.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .unwrap();
    let view = messages[0].approval_request.as_ref().unwrap();
    assert_eq!((view.status.as_deref(), view.processed), (Some("expired"), Some(true)));
}

async fn deleting_a_session_takes_its_messages_streams_approvals_and_grants(backend: Backend) {
    let store = backend.open();
    let storage = storage(Arc::clone(&store));
    let session = new_session(&storage, 1, "Chat").await;
    let kept = new_session(&storage, 1, "Kept").await;
    let stream = stream_of(&session);
    let request = approval(&session, &stream, &["c1"]);
    let mut asked = ChatMessage::new(Role::User, "file");
    asked.attachments = vec![Attachment {
        id: "attachment_x".into(),
        filename: "x.txt".into(),
        mime_type: "text/plain".into(),
        size: 1,
        content: "eA==".into(),
    }];
    storage
        .write(TurnWrite {
            new_stream: Some(stream.clone()),
            stream_id: Some(stream.id.clone()),
            events: vec![event(1, "{}")],
            new_approval: Some(request.clone()),
            new_grants: vec![
                (user(1), Some(session.id.clone()), "demo__echo".into()),
                (user(1), None, "demo__add".into()),
            ],
            messages: vec![asked],
            session_id: Some(session.id.clone()),
            ..TurnWrite::default()
        })
        .await
        .unwrap();
    storage.write(says(&kept, &["stays"])).await.unwrap();
    assert!(
        storage
            .ask(DeleteSession {
                user: user(1),
                id: session.id.clone()
            })
            .await
            .unwrap()
    );
    assert!(
        !storage
            .ask(DeleteSession {
                user: user(1),
                id: session.id.clone()
            })
            .await
            .unwrap(),
        "deleted once"
    );
    assert!(
        storage
            .ask(LoadStream {
                user: user(1),
                id: stream.id.clone(),
                after_seq: 0
            })
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        storage
            .ask(GetApproval {
                user: user(1),
                request_id: request.request_id.clone()
            })
            .await
            .unwrap()
            .is_none()
    );
    let grants = storage.ask(ListGrants { user: user(1) }).await.unwrap();
    assert_eq!(grants.len(), 1, "the session's grant went with it, the user's stays");
    assert_eq!(grants[0].tool, "demo__add");
    assert_eq!(contents(&storage, 1, &kept, None).await, ["stays"]);
    assert!(plain(|| store.running_streams()).unwrap().is_empty());
}

async fn concurrent_writers_and_readers_all_succeed(backend: Backend) {
    let store = backend.open();
    let session = Session::new(user(1), "Chat".into(), TitleSource::Default);
    plain(|| store.create_session(&session)).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            let session = session.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    store.write_turn(&says(&session, &[&format!("{t}-{i}")])).unwrap();
                    store
                        .list_messages(user(1), &session.id, Some(Page { limit: 5, offset: 0 }))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = plain(|| store.list_messages(user(1), &session.id, None))
        .unwrap()
        .unwrap();
    assert_eq!(all.len(), 200);
    // Each writer's messages keep its order.
    for t in 0..8 {
        let mine: Vec<_> = all
            .iter()
            .filter(|m| m.content.starts_with(&format!("{t}-")))
            .map(|m| m.content.clone())
            .collect();
        let expected: Vec<_> = (0..25).map(|i| format!("{t}-{i}")).collect();
        assert_eq!(mine, expected);
    }
}

async fn a_restart_keeps_everything_and_finds_the_turns_left_running(backend: Backend) {
    let store = backend.open();
    let session = Session::new(user(1), "Chat".into(), TitleSource::Default);
    plain(|| store.create_session(&session)).unwrap();
    let stream = stream_of(&session);
    let mut request = approval(&session, &stream, &["c1"]);
    request.calls[0].state = CallState::Approved { by: "policy".into() };
    request.calls[0].outcome = Some(CallOutcome::Running);
    request.status = ApprovalStatus::Approved;
    let write = TurnWrite {
        new_stream: Some(stream.clone()),
        stream_id: Some(stream.id.clone()),
        events: vec![event(1, r#"{"type":"message","content":"Hel"}"#)],
        new_approval: Some(request.clone()),
        ..says(&session, &["hello"])
    };
    plain(|| store.write_turn(&write)).unwrap();
    if store.is_shared() {
        // Several nodes share a PostgreSQL database.
        assert!(backend.try_open().is_ok(), "a second node opens the same database");
    } else {
        // One server holds a SQLite file at a time.
        assert!(
            matches!(backend.try_open(), Err(StorageError::InUse(_))),
            "a second store on the same database is refused"
        );
    }
    drop(store);

    let store = reopen(&backend).await;
    let running = plain(|| store.running_streams()).unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].0.id, stream.id);
    assert_eq!(running[0].1.len(), 1);
    let left = plain(|| store.approvals_with_running_calls()).unwrap();
    assert_eq!(left, vec![request]);
    assert_eq!(
        plain(|| actors::session::recovery::interrupt_running(store.as_ref())).unwrap(),
        1
    );
    assert!(plain(|| store.running_streams()).unwrap().is_empty());
    let storage = storage(store);
    let (record, events) = storage
        .ask(LoadStream {
            user: user(1),
            id: stream.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, StreamStatus::Interrupted);
    assert_eq!(
        events.last().map(|e| e.seq),
        Some(1 + actors::session::recovery::UNSEEN_GAP)
    );
    let stored = contents(&storage, 1, &session, None).await;
    assert_eq!(stored[0], "hello");
}

/// Opens the backend again once the previous store let go of it (a PostgreSQL session ends a
/// moment after its connection closes).
async fn reopen(backend: &Backend) -> Arc<dyn ChatStore> {
    for _ in 0..100 {
        match backend.try_open() {
            Err(StorageError::InUse(_)) => actix_rt::time::sleep(Duration::from_millis(50)).await,
            other => return other.unwrap(),
        }
    }
    panic!("the database stayed in use after its store was dropped");
}

/// A node (a store of its own) named `id` on the database at `url`.
fn node(url: &str, id: &str, options: &PostgresOptions) -> Arc<dyn ChatStore> {
    let options = PostgresOptions {
        node_id: id.into(),
        pool_size: 2,
        ..options.clone()
    };
    plain(|| Arc::new(PostgresStore::open(url, &options).unwrap()))
}

/// Two nodes on one PostgreSQL database: a turn's first write takes its session's lease (a second
/// turn anywhere is `Busy`, a node whose copy of the session is older than the lease is `Stale`),
/// its last write gives it back; a node that stops renewing loses its turn to another node, which
/// ends it as crash recovery does, and the first node's late writes are refused (fenced); a node
/// that renews keeps its turn; a cancel asked on any node reaches the renewing node.
#[actix_rt::test]
async fn postgres_leases_fence_turns_and_lapsed_ones_are_taken_over() {
    let Backend::Postgres(url) = Backend::postgres() else {
        unreachable!()
    };
    let options = PostgresOptions {
        lease: Duration::from_secs(3),
        ..PostgresOptions::default()
    };
    let (a, b) = (node(&url, "a", &options), node(&url, "b", &options));
    let session = Session::new(user(1), "Chat".into(), TitleSource::Default);
    plain(|| a.create_session(&session)).unwrap();
    let fence = |token, claim| Fence {
        session_id: session.id.clone(),
        token,
        claim,
        admit: claim,
    };
    let begin = |stream: &StreamRecord, token| TurnWrite {
        new_stream: Some(stream.clone()),
        stream_id: Some(stream.id.clone()),
        fence: Some(fence(token, true)),
        ..says(&session, &["hi"])
    };
    let step = |stream: &StreamRecord, token, seq, finish| TurnWrite {
        stream_id: Some(stream.id.clone()),
        events: vec![event(seq, r#"{"type":"message","content":"x"}"#)],
        finish,
        fence: Some(fence(token, false)),
        ..TurnWrite::default()
    };
    assert_eq!(plain(|| b.lease_token(&session.id)).unwrap(), 0);

    let first = stream_of(&session);
    plain(|| a.write_turn(&begin(&first, 1))).unwrap();
    let second = stream_of(&session);
    assert!(matches!(
        plain(|| b.write_turn(&begin(&second, 1))),
        Err(StorageError::Busy)
    ));
    assert!(matches!(
        plain(|| b.write_turn(&begin(&second, 2))),
        Err(StorageError::Busy)
    ));
    plain(|| a.write_turn(&step(&first, 1, 1, None))).unwrap();
    plain(|| a.write_turn(&step(&first, 1, 2, Some(StreamStatus::Done)))).unwrap();
    // B read the session before A's turn: its copy is stale, nothing of its write is stored.
    assert!(matches!(
        plain(|| b.write_turn(&begin(&second, 1))),
        Err(StorageError::Stale(_))
    ));
    assert_eq!(plain(|| b.lease_token(&session.id)).unwrap(), 1);
    plain(|| b.write_turn(&begin(&second, 2))).unwrap();
    let storage_a = storage(Arc::clone(&a));
    assert_eq!(contents(&storage_a, 1, &session, None).await, vec!["hi", "hi"]);

    // B dies mid-turn (no renewal): once its lease lapses, A ends the turn like crash recovery.
    assert!(
        plain(|| a.claim_orphaned_turns(false)).unwrap().is_empty(),
        "a live lease is not taken"
    );
    actix_rt::time::sleep(Duration::from_millis(3300)).await;
    let ended = plain(|| actors::session::recovery::interrupt_orphans(a.as_ref(), false)).unwrap();
    assert_eq!(ended, vec![second.id.clone()]);
    assert!(matches!(
        plain(|| b.write_turn(&step(&second, 2, 1, None))),
        Err(StorageError::Stale(_))
    ));
    let (record, events) = storage_a
        .ask(LoadStream {
            user: user(1),
            id: second.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, StreamStatus::Interrupted);
    assert!(events.last().unwrap().data.contains("\"code\":\"interrupted\""));

    // A renews its turn's lease: B never takes it, and B's cancel request reaches A.
    let token = plain(|| a.lease_token(&session.id)).unwrap();
    let third = stream_of(&session);
    plain(|| a.write_turn(&begin(&third, token + 1))).unwrap();
    for _ in 0..2 {
        actix_rt::time::sleep(Duration::from_millis(2000)).await;
        assert!(
            plain(|| a.renew_leases(std::slice::from_ref(&third.id)))
                .unwrap()
                .is_empty()
        );
    }
    assert!(
        plain(|| b.claim_orphaned_turns(false)).unwrap().is_empty(),
        "a renewed lease is kept"
    );
    assert!(
        !plain(|| b.request_cancel(user(2), &third.id)).unwrap(),
        "only the owner cancels"
    );
    assert!(plain(|| b.request_cancel(user(1), &third.id)).unwrap());
    assert_eq!(
        plain(|| a.renew_leases(std::slice::from_ref(&third.id))).unwrap(),
        vec![third.id.clone()]
    );
    plain(|| a.write_turn(&step(&third, token + 1, 1, Some(StreamStatus::Cancelled)))).unwrap();
    assert!(
        !plain(|| b.request_cancel(user(1), &third.id)).unwrap(),
        "an ended turn is not flagged"
    );
    plain(move || {
        drop(a);
        drop(b);
    });
}

/// Per-user limits on PostgreSQL are counted in the database, so they hold across nodes: with
/// one turn at once and two a minute, a second turn of the user on another node is refused while
/// the first runs, and a third in the minute is refused with the wait; a decision's continuation
/// is not counted; another user is not affected.
#[actix_rt::test]
async fn postgres_turn_limits_count_across_nodes() {
    let Backend::Postgres(url) = Backend::postgres() else {
        unreachable!()
    };
    let options = PostgresOptions {
        max_running_per_user: 1,
        turns_per_minute_per_user: 2,
        ..PostgresOptions::default()
    };
    let (a, b) = (node(&url, "a", &options), node(&url, "b", &options));
    let start = |store: &Arc<dyn ChatStore>, owner: i64, admit: bool| {
        let session = Session::new(user(owner), "Chat".into(), TitleSource::Default);
        plain(|| store.create_session(&session)).unwrap();
        let stream = stream_of(&session);
        let write = TurnWrite {
            new_stream: Some(stream.clone()),
            stream_id: Some(stream.id.clone()),
            fence: Some(Fence {
                session_id: session.id.clone(),
                token: 1,
                claim: true,
                admit,
            }),
            ..says(&session, &["hi"])
        };
        (plain(|| store.write_turn(&write)), session, stream)
    };
    // The last write of a turn: it gives the lease back.
    let end = |session: &Session, stream: &StreamRecord| TurnWrite {
        stream_id: Some(stream.id.clone()),
        finish: Some(StreamStatus::Done),
        fence: Some(Fence {
            session_id: session.id.clone(),
            token: 1,
            claim: false,
            admit: false,
        }),
        ..TurnWrite::default()
    };
    let (first, session, stream) = start(&a, 1, true);
    first.unwrap();
    let (second, _, _) = start(&b, 1, true);
    assert!(
        matches!(second, Err(StorageError::Limited { reason, .. }) if reason.contains("at once")),
        "{second:?}"
    );
    let (other_user, _, _) = start(&b, 2, true);
    other_user.unwrap();
    plain(|| a.write_turn(&end(&session, &stream))).unwrap();
    let (third, session, stream) = start(&b, 1, true);
    third.unwrap();
    plain(|| b.write_turn(&end(&session, &stream))).unwrap();
    let (fourth, _, _) = start(&a, 1, true);
    match fourth {
        Err(StorageError::Limited { reason, retry_after }) => {
            assert!(reason.contains("minute"), "{reason}");
            assert!((1..=30).contains(&retry_after), "{retry_after}");
        }
        other => panic!("a third turn in the minute was not refused: {other:?}"),
    }
    let (continuation, _, _) = start(&a, 1, false);
    continuation.unwrap();
    plain(move || {
        drop(a);
        drop(b);
    });
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[actix_rt::test] async fn $name() { super::$name(super::Backend::sqlite()).await })*
        }
        mod postgres {
            $(#[actix_rt::test] async fn $name() { super::$name(super::Backend::postgres()).await })*
        }
    };
}

contract!(
    sessions_list_newest_first_with_a_total_and_stay_with_their_owner,
    titles_set_by_the_person_are_never_replaced_by_generated_ones,
    messages_keep_their_order_fields_and_attachments_and_page,
    a_batch_commits_each_write_whole_and_a_failing_one_alone,
    a_failing_write_leaves_nothing_behind,
    stream_events_replay_in_order_after_any_id_for_their_owner_only,
    approvals_settle_once_and_are_found_by_id_history_row_and_session,
    an_expired_pending_request_reads_expired_in_history,
    deleting_a_session_takes_its_messages_streams_approvals_and_grants,
    concurrent_writers_and_readers_all_succeed,
    a_restart_keeps_everything_and_finds_the_turns_left_running,
    admin_records_are_created_once_replaced_listed_by_kind_and_deleted,
    an_answer_is_stored_once_by_its_user_while_its_stream_runs,
);

/// The answer to a question asked during a call (an elicitation whose call waits): stored once,
/// by its user, only while the asking stream runs.
async fn an_answer_is_stored_once_by_its_user_while_its_stream_runs(backend: Backend) {
    let storage = storage(backend.open());
    let session = new_session(&storage, 1, "Chat").await;
    let ask = |stream: &StreamRecord| {
        let mut record = approval(&session, stream, &["c1"]);
        record.request_id = format!("elicitation_{}", uuid_like());
        record.calls[0].state = CallState::Approved { by: "rule".into() };
        let question = Question::from_params("elicitation", &serde_json::json!({"message": "Name?"})).unwrap();
        record.calls[0].input = Some(InputState {
            questions: vec![question],
            request_state: None,
            answers: Default::default(),
            round: 0,
            live: true,
        });
        record
    };
    let (running, ended) = (stream_of(&session), stream_of(&session));
    let (asked, lapsed) = (ask(&running), ask(&ended));
    for (stream, record) in [(&running, &asked), (&ended, &lapsed)] {
        storage
            .write(TurnWrite {
                new_stream: Some(stream.clone()),
                new_approval: Some(record.clone()),
                ..TurnWrite::default()
            })
            .await
            .unwrap();
    }
    storage
        .write(TurnWrite {
            stream_id: Some(ended.id.clone()),
            finish: Some(StreamStatus::Done),
            ..TurnWrite::default()
        })
        .await
        .unwrap();
    let answer = |record: &ApprovalRecord, owner: i64| {
        let mut answered = record.clone();
        answered.record_answer(serde_json::json!({"action": "decline"}), "user:1", actors::model::now());
        answered.user_id = user(owner);
        StoreAnswer { answered }
    };
    assert!(!storage.ask(answer(&asked, 2)).await.unwrap(), "not user 2's");
    assert!(storage.ask(answer(&asked, 1)).await.unwrap());
    assert!(!storage.ask(answer(&asked, 1)).await.unwrap(), "answered once");
    assert!(!storage.ask(answer(&lapsed, 1)).await.unwrap(), "its stream has ended");
    let stored = storage
        .ask(GetApproval {
            user: user(1),
            request_id: asked.request_id.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, ApprovalStatus::Approved);
    assert_eq!(stored.decided_by.as_deref(), Some("user:1"));
    let answers = &stored.calls[0].input.as_ref().unwrap().answers;
    assert_eq!(answers["elicitation"], serde_json::json!({"action": "decline"}));
}

/// Admin records (providers registered through the admin API): a name is created once, a record
/// is replaced only when it exists, lists are by name within a kind, and they survive a reopen.
async fn admin_records_are_created_once_replaced_listed_by_kind_and_deleted(backend: Backend) {
    use chrono::TimeZone;
    let storage = storage(backend.open());
    let at = chrono::Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
    let record = |kind: &str, name: &str, model: &str| AdminRecord {
        kind: kind.into(),
        name: name.into(),
        spec: format!(r#"{{"kind":"mock","model":"{model}"}}"#),
        updated_by: "admin user 9".into(),
        updated_at: at,
    };
    let put = |record: AdminRecord, create: bool| storage.ask(PutAdminRecord { record, create });
    assert!(put(record("provider", "b", "one"), true).await.unwrap());
    assert!(
        !put(record("provider", "b", "other"), true).await.unwrap(),
        "a name is taken once"
    );
    assert!(put(record("provider", "a", "one"), true).await.unwrap());
    assert!(
        put(record("other", "a", "one"), true).await.unwrap(),
        "names are per kind"
    );
    assert!(put(record("provider", "b", "two"), false).await.unwrap());
    assert!(
        !put(record("provider", "zz", "two"), false).await.unwrap(),
        "only an existing one is replaced"
    );
    assert!(
        storage
            .ask(DeleteAdminRecord {
                kind: "provider".into(),
                name: "a".into()
            })
            .await
            .unwrap()
    );
    assert!(
        !storage
            .ask(DeleteAdminRecord {
                kind: "provider".into(),
                name: "a".into()
            })
            .await
            .unwrap()
    );
    drop(storage);
    let storage = crate::storage(reopen(&backend).await);
    let listed = storage
        .ask(ListAdminRecords {
            kind: "provider".into(),
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let spec: serde_json::Value = serde_json::from_str(&listed[0].spec).unwrap();
    assert_eq!(
        (listed[0].name.as_str(), &spec["model"]),
        ("b", &serde_json::json!("two"))
    );
    assert_eq!(
        (listed[0].updated_by.as_str(), listed[0].updated_at),
        ("admin user 9", at)
    );
    assert_eq!(
        storage
            .ask(ListAdminRecords { kind: "other".into() })
            .await
            .unwrap()
            .len(),
        1
    );
}

/// The original's database (its tables as its golang-migrate steps left them, with its rows) is
/// migrated in place: its sessions, messages (in time order), tool calls and attachments read
/// back, new turns are stored beside them, and its own migration table is left alone.
#[actix_rt::test]
async fn the_originals_postgres_database_is_migrated_in_place() {
    let backend = Backend::postgres();
    let Backend::Postgres(url) = &backend else {
        unreachable!()
    };
    plain(|| {
        let mut original = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
        original
            .batch_execute(
                r#"
CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, dirty BOOLEAN NOT NULL);
INSERT INTO schema_migrations VALUES (2, false);
CREATE TABLE chat_sessions (
    id VARCHAR(64) PRIMARY KEY, user_id VARCHAR(255) NOT NULL, title VARCHAR(255) NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW());
CREATE INDEX idx_chat_sessions_user_id ON chat_sessions(user_id);
CREATE INDEX idx_chat_sessions_updated_at ON chat_sessions(updated_at DESC);
CREATE TABLE chat_messages (
    id VARCHAR(64) PRIMARY KEY,
    session_id VARCHAR(64) NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    role VARCHAR(50) NOT NULL, content TEXT NOT NULL, tool_calls JSONB, tool_executions JSONB,
    approval_request JSONB, created_at TIMESTAMPTZ NOT NULL DEFAULT NOW());
CREATE INDEX idx_chat_messages_session_id ON chat_messages(session_id);
CREATE INDEX idx_chat_messages_created_at ON chat_messages(created_at);
CREATE TABLE chat_attachments (
    id VARCHAR(64) PRIMARY KEY,
    message_id VARCHAR(64) NOT NULL REFERENCES chat_messages(id) ON DELETE CASCADE,
    filename VARCHAR(255) NOT NULL, mime_type VARCHAR(100) NOT NULL, size BIGINT NOT NULL,
    content TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT NOW());
CREATE INDEX idx_chat_attachments_message_id ON chat_attachments(message_id);

INSERT INTO chat_sessions (id, user_id, title, created_at, updated_at) VALUES
    ('0b6f1f3e-8a43-4f57-9d0e-3c2f0b1f7a11', '1', 'Chat - Jan 2, 2026 at 3:04 PM',
     '2026-01-02T15:04:00Z', '2026-01-02T15:05:00Z');
-- Inserted out of time order: the original read them back by time.
INSERT INTO chat_messages (id, session_id, role, content, tool_calls, created_at) VALUES
    ('assistant_2', '0b6f1f3e-8a43-4f57-9d0e-3c2f0b1f7a11', 'assistant', 'Let me look.',
     '[{"id":"call_1","type":"function","function":{"name":"get_time","arguments":"{}"}}]',
     '2026-01-02T15:04:02Z'),
    ('user_1', '0b6f1f3e-8a43-4f57-9d0e-3c2f0b1f7a11', 'user', 'What time is it?', NULL,
     '2026-01-02T15:04:01Z');
INSERT INTO chat_attachments (id, message_id, filename, mime_type, size, content) VALUES
    ('att_1', 'user_1', 'note.txt', 'text/plain', 2, 'aGk=');
"#,
            )
            .unwrap();
    });
    let storage = storage(backend.open());
    let (sessions, total) = storage
        .ask(ListSessions {
            user: user(1),
            page: Page { limit: 10, offset: 0 },
        })
        .await
        .unwrap();
    assert_eq!(total, 1);
    let session = sessions[0].clone();
    assert_eq!(session.title, "Chat - Jan 2, 2026 at 3:04 PM");
    assert_eq!(session.title_source, TitleSource::Default);
    let messages = storage
        .ask(ListMessages {
            user: user(1),
            id: session.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["user_1", "assistant_2"]
    );
    assert_eq!(messages[0].attachments[0].content, "aGk=");
    assert_eq!(messages[1].tool_calls[0].function.name, "get_time");

    // New turns go after the original's rows.
    storage.write(says(&session, &["and now?"])).await.unwrap();
    assert_eq!(
        contents(&storage, 1, &session, None).await,
        ["What time is it?", "Let me look.", "and now?"]
    );
    let theirs: (i64, bool) = plain(|| {
        let mut check = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
        let row = check
            .query_one("SELECT version, dirty FROM schema_migrations", &[])
            .unwrap();
        (row.get(0), row.get(1))
    });
    assert_eq!(theirs, (2, false), "the original's migration table is left as it was");
}
