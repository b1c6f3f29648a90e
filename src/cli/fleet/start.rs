//! `handoff fleet start COMPONENT [--sign KEY] [--no-wait]`: lift a fleet-wide stop or kill.
//! Every agent then starts the component on its host again, at the tag the fleet runs (the
//! config's, or that of the component's last finished rollout). A signed record, like the
//! stop it lifts. Waits until every live host serves it.

use anyhow::Result;

use super::stop::stop_everywhere;
use super::Fleet;
use crate::fleet::records::StopAction;

pub type Args = super::stop::Args;

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    stop_everywhere(args, fleet, StopAction::Start)
}
