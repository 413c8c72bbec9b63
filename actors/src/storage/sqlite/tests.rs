//! The SQLite store on real files: migrations, isolation, titles, turn writes, concurrent writers.

use super::*;
use crate::model::Role;

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), 4).unwrap();
    (dir, store)
}

fn user(n: i64) -> UserId {
    UserId::new(n).unwrap()
}

#[test]
fn migration_is_idempotent_and_sets_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(SqliteStore::open(&path, 1).unwrap());
    let store = SqliteStore::open(&path, 1).unwrap();
    let version: i64 = store
        .conn()
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version as usize, super::SCHEMA_VERSION);
}

#[test]
fn sessions_are_isolated_by_user() {
    let (_dir, store) = store();
    let session = Session::new(user(1), "mine".into(), TitleSource::User);
    store.create_session(&session).unwrap();
    assert!(store.get_session(user(1), &session.id).unwrap().is_some());
    assert!(store.get_session(user(2), &session.id).unwrap().is_none());
    assert!(store.list_messages(user(2), &session.id, None).unwrap().is_none());
    assert!(!store.delete_session(user(2), &session.id).unwrap());
    assert!(!store.clear_messages(user(2), &session.id).unwrap());
    assert!(store.get_session(user(1), &session.id).unwrap().is_some());
}

#[test]
fn generated_titles_never_replace_user_titles() {
    let (_dir, store) = store();
    let session = Session::new(user(1), "Chat".into(), TitleSource::Default);
    store.create_session(&session).unwrap();
    assert!(
        store
            .set_title(user(1), &session.id, "Mine", TitleSource::User)
            .unwrap()
    );
    assert!(
        !store
            .set_title(user(1), &session.id, "Auto", TitleSource::Generated)
            .unwrap()
    );
    let stored = store.get_session(user(1), &session.id).unwrap().unwrap();
    assert_eq!(stored.title, "Mine");
}

#[test]
fn turn_writes_keep_message_order_and_stream_events() {
    let (_dir, store) = store();
    let session = Session::new(user(1), "Chat".into(), TitleSource::Default);
    store.create_session(&session).unwrap();
    let stream = StreamRecord {
        id: StreamId::generate(),
        user_id: user(1),
        session_id: session.id.clone(),
        status: StreamStatus::Running,
        created_at: Utc::now(),
    };
    let messages: Vec<_> = (0..5).map(|i| ChatMessage::new(Role::User, format!("m{i}"))).collect();
    store
        .write_turn(&TurnWrite {
            new_stream: Some(stream.clone()),
            messages: messages.clone(),
            session_id: Some(session.id.clone()),
            stream_id: Some(stream.id.clone()),
            events: vec![
                StoredEvent {
                    seq: 1,
                    data: "a".into(),
                },
                StoredEvent {
                    seq: 2,
                    data: "b".into(),
                },
            ],
            finish: None,
            ..TurnWrite::default()
        })
        .unwrap();
    let loaded = store.list_messages(user(1), &session.id, None).unwrap().unwrap();
    assert_eq!(loaded, messages);
    let page = store
        .list_messages(user(1), &session.id, Some(Page { limit: 2, offset: 3 }))
        .unwrap()
        .unwrap();
    assert_eq!(page, messages[3..5].to_vec());
    let (record, events) = store.load_stream(user(1), &stream.id, 1).unwrap().unwrap();
    assert_eq!(record.status, StreamStatus::Running);
    assert_eq!(
        events,
        vec![StoredEvent {
            seq: 2,
            data: "b".into()
        }]
    );
    assert!(store.load_stream(user(2), &stream.id, 0).unwrap().is_none());
    assert_eq!(crate::session::recovery::interrupt_running(&store).unwrap(), 1);
    let (record, _) = store.load_stream(user(1), &stream.id, 0).unwrap().unwrap();
    assert_eq!(record.status, StreamStatus::Interrupted);
}

#[test]
fn concurrent_writers_never_see_database_locked() {
    let (_dir, store) = store();
    let store = std::sync::Arc::new(store);
    let session = Session::new(user(1), "Chat".into(), TitleSource::Default);
    store.create_session(&session).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = std::sync::Arc::clone(&store);
            let id = session.id.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    store
                        .write_turn(&TurnWrite {
                            messages: vec![ChatMessage::new(Role::User, format!("{i}"))],
                            session_id: Some(id.clone()),
                            ..TurnWrite::default()
                        })
                        .unwrap();
                    store
                        .list_messages(user(1), &id, Some(Page { limit: 5, offset: 0 }))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = store.list_messages(user(1), &session.id, None).unwrap().unwrap();
    assert_eq!(all.len(), 400);
}

#[test]
fn a_batch_commits_each_write_whole_and_a_failing_one_alone() {
    use crate::approval::{ApprovalRecord, ApprovalStatus};
    let (_dir, store) = store();
    let session = Session::new(user(1), "Chat".into(), TitleSource::Default);
    store.create_session(&session).unwrap();
    let says = |text: &str| TurnWrite {
        messages: vec![ChatMessage::new(Role::User, text)],
        session_id: Some(session.id.clone()),
        ..TurnWrite::default()
    };
    // Settling a request that was never stored conflicts: its message must not be stored either.
    let now = Utc::now();
    let unknown = ApprovalRecord {
        request_id: "approval_missing".into(),
        user_id: user(1),
        session_id: session.id.clone(),
        stream_id: StreamId::generate(),
        calls: Vec::new(),
        status: ApprovalStatus::Approved,
        created_at: now,
        expires_at: now,
        decided_by: None,
        decided_at: None,
    };
    let conflicting = TurnWrite {
        settle_approval: Some(unknown),
        ..says("lost with its write")
    };
    let results = store.write_turns(&[says("first"), conflicting, says("third")]);
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(StorageError::Conflict(_))), "{results:?}");
    let stored: Vec<String> = store
        .list_messages(user(1), &session.id, None)
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(stored, ["first", "third"]);
}
