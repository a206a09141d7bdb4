//! Running a build, in three parts that never import each other backwards: a pure
//! preparation ([`prepare`]: plan + engines → jobs, shared stages, records), the
//! [`scheduler`] (runs jobs on engines through an [`executor::Executor`] and emits
//! [`events`]), and the listeners: the manifest [`recorder`] here and the terminal
//! reporter in `report`.

pub mod accept;
pub mod events;
pub mod executor;
#[cfg(test)]
pub mod fake;
pub mod options;
mod preflight;
pub mod prepare;
pub mod publish;
pub mod recorder;
pub mod runner;
pub mod scheduler;
