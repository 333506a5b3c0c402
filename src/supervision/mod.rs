//! Supervision of specialists, OTP style, and the roster that routes to them.
//!
//! Every specialist runs linked under one supervisor. When it exits, the supervisor
//! decides — by its [`RestartType`], the [`RestartIntensity`], the [`Strategy`] and
//! the [`Backoff`] — whether and when to start it (and its group) again, publishes
//! what it did as [`SupervisorEvent`]s, and keeps the roster slot that branches route
//! by. A specialist whose intensity is exceeded *escalates*: its circuit opens (the
//! slot goes down with the reason, so branches fail at once with it) and after the
//! cool-down it is started afresh.
//!
//! # Layout
//! - `config`: the policy as data ([`SupervisionConfig`]);
//! - `decision`: the restart decision, a pure state machine with table-driven tests;
//! - `supervisor`: the actor, a thin shell that carries decisions out;
//! - `roster`: name → `watch` slot (`Up` at an `ActorRef`, `Restarting`, `Down`);
//! - `specialist`: [`Specialist`], a name plus how to (re)spawn it;
//! - `event`: [`SupervisorEvent`], [`SpecialistStatus`] and the typed reasons.

mod config;
mod decision;
mod event;
mod roster;
mod specialist;
mod supervisor;

pub use config::{
    Backoff, RestartIntensity, RestartType, Strategy, SupervisionConfig, UnknownStrategy,
};
pub(crate) use decision::{Decision, Restarts};
pub use event::{DownReason, ExitReason, RestartCause, SpecialistStatus, SupervisorEvent};
pub(crate) use roster::{Roster, Slot};
pub use specialist::Specialist;
pub use supervisor::{AddError, START_TIMEOUT};
pub(crate) use supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
