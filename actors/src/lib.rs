//! The core of aichat: every actor, the adapter each one owns, and the domain types.
//!
//! # Actor map
//!
//! ```text
//!  HTTP shell ──Chat──▶ SessionRegistry ──starts──▶ SessionActor (one per chat session)
//!                            │                          │  │  │
//!                            │ Resolve/Evict/Forget     │  │  └─▶ ToolCatalog (MCP pools)
//!                            ▼                          │  └────▶ ProviderActor (one per provider,
//!                        Storage ◀──────────────────────┘          supervised, many streams at once)
//!                  (SyncArbiter, r2d2 SQLite)
//!                            ▲
//!  StreamHub ◀── StreamBuffer per turn ◀── the turn pushes every event; SSE readers subscribe
//! ```
//!
//! # One turn
//!
//! 1. `Chat::submit` sends `Resolve` to the registry, which checks the session in storage (or
//!    creates one) and starts its `SessionActor` if needed; the actor loads history first.
//! 2. `StartTurn` stores the user message and the stream row in one transaction, registers the
//!    stream's buffer in the hub and spawns the turn; the caller gets the stream id at once.
//! 3. The turn asks the provider actor to stream; text deltas go to the buffer as `message` events.
//! 4. Tool calls of one model answer run at once; results are gathered by call index into one
//!    `tool_execution` event; the round is stored; the provider is called again.
//! 5. The answer and the event log are stored, then `done` (or `error`) ends the stream.

#![warn(missing_docs)]

pub mod answer;
pub mod approval;
pub mod attachment;
pub mod backlog;
pub mod chat;
pub mod ids;
pub mod limits;
pub mod mcp;
pub mod model;
pub mod provider;
pub mod registry;
pub mod session;
pub mod storage;
pub mod stream;
pub mod tools;

pub use chat::{Chat, Submission};
