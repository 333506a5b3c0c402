//! Integration tests, compiled as one binary. Offline: the simulated provider and
//! in-process scripted agents only; time-dependent tests run on paused tokio time.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod admission;
mod budget;
mod caching;
mod common;
mod concurrency;
mod deadlines;
mod deferred;
mod delegate;
mod events;
mod graph;
mod hostile_servers;
mod layers;
mod llama;
mod mcp;
mod merge_fit;
mod nested;
mod placement;
mod policies;
mod providers;
mod shutdown;
mod soak;
mod strategies;
mod structured;
mod supervision;
mod synthesis;
mod tool_journal;
mod tools;
mod waste;
mod workflows;
