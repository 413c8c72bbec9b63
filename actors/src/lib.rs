//! The core of aichat: every actor, the adapter each one owns, and the domain types. The shell
//! (`src/`) reaches it only through [`Chat`].
//!
//! # Actor map
//!
//! ```text
//!  HTTP workers ──▶ Chat ──Submit/Resolve/Evict──▶ SessionRegistry ──starts, forwards StartTurn──┐
//!  (actix-web,        │                            (main arbiter, supervised)                    │
//!   one per core)     │                                                                          ▼
//!                     │   StreamHub ◀──registers── SessionActor, one per chat (main arbiter) ◀───┘
//!                     │   (buffers by id)           │ runs one Turn at a time, as a spawned future
//!                     │        ▲ every event        │
//!                     │        └──── Turn ──────────┼─StreamCompletion──▶ ProviderActor, one per provider
//!                     │                             │                    (provider arbiter, supervised)
//!                     │                             ├─CallTool × N──────▶ McpPool, one per MCP server
//!                     │                             │   (scatter; gather  (MCP arbiter, supervised)
//!                     │                             │    by call index)     └─ owns McpConnection × pool_size
//!                     │                             │                          (supervised; reconnect with
//!                     │                             │                           backoff; report Up/Down)
//!                     │                             └─WriteTurn─────────▶ TurnWriter (main arbiter): group
//!                     │                                                   commit, one transaction per batch
//!                     └────── records ───────────────────────────────────▶ StorageActor × database.threads
//!                                                                        (SyncArbiter, r2d2 SQLite or
//!                                                                         PostgreSQL)
//!  On PostgreSQL (several nodes may share it):
//!  ClusterActor (main arbiter, supervised) ──RenewLeases, InterruptOrphans──▶ StorageActor
//!  LISTEN thread ──events announced──▶ StreamHub (wakes followed streams)
//!                ──cancel asked─────▶ SessionRegistry (CancelHere ▶ StopTurn)
//! ```
//!
//! Threads: the HTTP workers; the main arbiter (registry, session actors, their turns, the turn
//! writer); one arbiter for the provider actors; one for the MCP pools and connections; the
//! storage `SyncArbiter`'s threads (reads and record changes) and a blocking-pool thread for each
//! turn-write batch; SQLite's WAL checkpointer, or on PostgreSQL the `LISTEN` thread.
//!
//! Supervision: the registry, the provider actors, the MCP pools and connections restart when
//! they stop (a provider stream that panics is caught and stops its actor, which comes back with a
//! fresh adapter; a connection that dies reconnects with jittered backoff and tells its pool). A
//! session actor whose turn panics stops; the next message starts a fresh one from storage.
//! Session actors stop when idle and tell the registry (`Forget`).
//!
//! # One turn
//!
//! 1. `Chat::send` applies the in-band protocol (`[APPROVE_TOOLS:<id>]` decides instead), the
//!    user's turn limits and the provider name, then sends `Submit` to the registry. The registry
//!    checks the session in storage (or creates one), starts its `SessionActor` if needed (which
//!    loads the history first) and forwards `StartTurn`: one round trip for the caller.
//! 2. The session actor stores the user message and the stream row in one `WriteTurn` (every
//!    write of a turn goes to the `TurnWriter`, which commits the writes queued together in one
//!    transaction and answers each once committed), registers
//!    the stream's `StreamBuffer` in the hub, spawns the `Turn` and replies with the stream id.
//! 3. The turn sends `StreamCompletion` to the provider actor, which spawns the vendor stream and
//!    returns at once; deltas come back on a channel and go to the buffer as `message` events
//!    (stored every half second or 64 events).
//! 4. The tool calls of one answer are classified by the approval policy and the user's grants.
//!    The runnable ones are scattered at once as `CallTool` messages to their servers' `McpPool`
//!    actors; each pool takes a permit, picks its least busy ready connection and sends
//!    `tools/call`; the replies are gathered by call index. The round is stored, then its
//!    `tool_execution` event is pushed, and the provider is called again.
//! 5. The answer, the event log and the final status are stored, and only then `done` (or
//!    `error`) reaches readers. After a session's first exchange a title is generated.
//!
//! Readers never slow a turn: `GET /stream/{id}` (`Chat::open_stream`) subscribes to the buffer
//! (or to the stream rebuilt from storage) after any sequence number.
//!
//! # The approval path
//!
//! When a call needs the person, the turn stores an approval request and only then pushes
//! `tool_approval_request`; the turn ends. A decision (`POST /approvals/{id}` or the in-band
//! message) goes `Chat::decide` → storage (`GetApproval`: the user's, pending, not expired) →
//! registry (`Resolve`) → `Decide` to the session actor, which applies it
//! (`ApprovalRecord::decide`) and starts the continuation turn: its first write settles the
//! request and stores any "always allow" grant; approved calls are scattered as in step 4, denied
//! ones get a denial result. A new message instead of a decision supersedes the request.
//!
//! A tool's question for the person (elicitation) takes the same path. An "input required"
//! result pauses the batch as an approval does (stored as `elicitation_<uuid>` beside the
//! approvals, then `elicitation_request`, then `done`); `Chat::answer_elicitation` → `Decide`
//! checks the answer against the question's schema and the continuation sends the call again
//! with it. A question asked during a call (`elicitation/create`) reaches the one call in
//! flight on its connection (`mcp::asking`); the turn stores it, announces it and waits, and the
//! answer goes to the turn through the session actor (`live` questions), stored before the tool
//! gets it.
//!
//! # How nodes share one database
//!
//! On PostgreSQL any number of nodes may serve the same sessions behind a plain load balancer;
//! they share nothing but the database. Five mechanisms, all in tables and `NOTIFY`:
//!
//! - **Leases.** A turn's first write takes its session's row in `session_leases` (node, expiry,
//!   a fencing token that goes up by one per turn) in the same transaction as the stream row; if
//!   another turn holds it the send gets 409 `turn_in_progress`, wherever it runs. Every later
//!   write of the turn carries the token and is refused if it is no longer the session's; the
//!   last write gives the lease back. A session actor knows the token of the history it holds:
//!   when another node ran a turn since, its claim is refused as stale, and the registry asks a
//!   fresh actor, which reads the session again. No node ever answers from a stale context.
//! - **Renewal and takeover.** The `ClusterActor` renews this node's leases of running turns
//!   every third of `cluster.lease_secs`. A node that dies stops renewing; once its leases lapse,
//!   any node's `ClusterActor` claims those turns (`FOR UPDATE SKIP LOCKED`, the token goes up,
//!   so the dead node could not write even if it came back) and ends them exactly as crash
//!   recovery does: partial answer kept as `interrupted`, stream ended with an `interrupted` error.
//! - **Followed streams.** `GET /stream/{id}` on a node that does not run the turn builds a
//!   buffer from the stored events and follows it: every committed batch of events sends
//!   `NOTIFY aichat_events` (stream id, last sequence number, time; never the text), the node's
//!   `LISTEN` thread wakes the follower, which reads the new rows. A slow poll covers a lost
//!   notice; a reconnect of the listener wakes every follower. Events are stored at least every
//!   `cluster.flush_ms`, so remote readers trail by about that much; ids and bytes are the same
//!   on every node, so `Last-Event-ID` works anywhere.
//! - **Cancel anywhere.** `POST /stream/{id}/cancel` on another node sets `cancel_requested` on the
//!   stream and sends `NOTIFY aichat_cancel`; the owner stops the turn (or finds the flag at its
//!   next renewal if the notice was lost).
//! - **Answer anywhere.** A tool's question asked during a call (2025-11-25 servers hold the call
//!   open for it) waits in the turn that runs the call. Answered on another node, the answer is
//!   checked and stored there (the elicitation settled, if its stream still runs) and
//!   `NOTIFY aichat_answer` tells the owner, whose turn reads it and gives it to the tool. A paused
//!   question (2026-07-28) needs nothing of the kind: any node continues the turn.

#![warn(missing_docs)]

pub mod answer;
pub mod approval;
pub mod attachment;
pub mod backlog;
pub mod cause;
pub mod chat;
pub mod cluster;
pub mod elicitation;
pub mod ids;
pub mod limits;
pub mod mcp;
pub mod model;
pub mod provider;
pub mod registry;
pub mod session;
pub mod storage;
pub mod stream;
pub mod sync;
pub mod tools;

pub use chat::{Chat, Submission};
