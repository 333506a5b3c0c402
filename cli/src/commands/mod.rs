//! One module per command.

pub mod agents;
pub mod approvals;
pub mod batch;
pub mod bench;
pub mod cluster;
pub mod dry_run;
pub mod limits;
pub mod mock_llm;
pub mod run;
pub mod serve;
pub mod submit;
pub mod worker;
pub mod workflows;
