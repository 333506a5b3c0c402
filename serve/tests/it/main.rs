//! fanfare-serve's integration tests, compiled as one binary: a real server on
//! 127.0.0.1:0 driven over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod cancel;
mod common;
mod journal;
mod limits;
mod load;
mod openai;
mod origin;
mod page;
mod repair;
mod shutdown;
mod streams;
mod tools;
