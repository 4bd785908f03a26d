//! The command-line tools besides the gateway itself: `ctl` (the admin API's client),
//! `check` (`sluicegate check` / `discover` output) and `demo`.

pub mod check;
pub mod ctl;
pub mod demo;
