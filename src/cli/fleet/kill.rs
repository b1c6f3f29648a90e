//! `handoff fleet kill COMPONENT [--sign KEY] [--no-wait]`: the local `kill` on every host of
//! the fleet: like `fleet stop`, without draining and without termination signals; it also
//! cuts short a `fleet stop` that is still draining.

use anyhow::Result;

use super::stop::stop_everywhere;
use super::Fleet;
use crate::fleet::records::StopAction;

pub type Args = super::stop::Args;

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    stop_everywhere(args, fleet, StopAction::Kill)
}
