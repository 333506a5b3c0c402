//! `fanfare approvals`: the tool calls of a `fanfare serve` run that wait for a
//! person.

use super::ClientArgs;

/// What to do with approvals.
#[derive(clap::Subcommand)]
pub enum ApprovalsCommand {
    /// The calls of run RUN waiting for a decision: id, agent, tool and arguments.
    List {
        /// The run (run-N).
        run: String,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Let call APPROVAL of run RUN run as the model asked.
    Approve {
        /// The run (run-N).
        run: String,
        /// The approval's id (from `list`).
        approval: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Refuse call APPROVAL of run RUN; the model is told, with the reason.
    Reject {
        /// The run (run-N).
        run: String,
        /// The approval's id (from `list`).
        approval: String,
        /// Why, for the model.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Let call APPROVAL of run RUN run with other arguments (JSON).
    Edit {
        /// The run (run-N).
        run: String,
        /// The approval's id (from `list`).
        approval: String,
        /// The arguments to run it with, as a JSON object.
        #[arg(long, value_name = "JSON")]
        input: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}
