//! Fleet-wide `stop`, `kill` and `start`. gantryd's `stop` and `kill` wrote a component state
//! every machine acted on; here each is a signed record `spec/stops/{component}` ([`StopSpec`]),
//! which every agent watches:
//!
//! * `stop`: the agent takes the component's ports out of its ruleset, reports `stopping`,
//!   lets the flows drain as the local `stop` does, then retires the containers and reports
//!   `stopped`;
//! * `kill`: the same without draining or termination signals; it reports `killed`. A kill
//!   after a stop cuts the drain short;
//! * `start`: convergence starts the component again, at the fleet's tag. A record, not a
//!   deletion, so that it is signed like the stop it lifts.
//!
//! A stop is refused while a rollout of the component runs, and a rollout is refused while
//! the component is stopped: each write is guarded by the other's record, so of a stop and a
//! rollout asked at the same moment exactly one happens.

use super::records::{state, StopSpec};

/// What a host must do about `stop`, given the state it last reported for the component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Take the component out and drain it (again, after a restart mid-drain).
    Withdraw,
    /// Retire everything of the component at once.
    Kill,
    /// The host is where the stop wants it.
    Nothing,
}

pub fn action(stop: &StopSpec, reported: Option<&str>) -> Action {
    match (stop.kill(), reported) {
        (_, Some(state::KILLED)) => Action::Nothing,
        (true, _) => Action::Kill,
        (false, Some(state::STOPPED)) => Action::Nothing,
        (false, _) => Action::Withdraw,
    }
}

/// Whether a host that reported `reported` has done what `stop` asks.
pub fn satisfied(stop: &StopSpec, reported: Option<&str>) -> bool {
    match reported {
        Some(state::KILLED) => true,
        Some(state::STOPPED) => !stop.kill(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::records::StopAction;
    use state::{KILLED, STOPPED, STOPPING};

    fn stop(kill: bool) -> StopSpec {
        StopSpec {
            component: "web".into(),
            action: if kill {
                StopAction::Kill
            } else {
                StopAction::Stop
            },
            since_ms: 1,
        }
    }

    #[test]
    fn a_stop_withdraws_until_stopped_and_a_kill_cuts_a_drain_short() {
        assert_eq!(action(&stop(false), Some("ready")), Action::Withdraw);
        assert_eq!(action(&stop(false), None), Action::Withdraw);
        // An agent restarted mid-drain withdraws again, which resumes the drain.
        assert_eq!(action(&stop(false), Some(STOPPING)), Action::Withdraw);
        assert_eq!(action(&stop(false), Some(STOPPED)), Action::Nothing);
        assert_eq!(action(&stop(false), Some(KILLED)), Action::Nothing);
        assert_eq!(action(&stop(true), Some(STOPPING)), Action::Kill);
        assert_eq!(action(&stop(true), Some(STOPPED)), Action::Kill);
        assert_eq!(action(&stop(true), Some(KILLED)), Action::Nothing);
    }

    #[test]
    fn a_stop_is_done_when_stopped_or_killed_and_a_kill_only_when_killed() {
        assert!(!satisfied(&stop(false), Some(STOPPING)));
        assert!(satisfied(&stop(false), Some(STOPPED)));
        assert!(satisfied(&stop(false), Some(KILLED)));
        assert!(!satisfied(&stop(true), Some(STOPPED)));
        assert!(satisfied(&stop(true), Some(KILLED)));
        assert!(!satisfied(&stop(true), None));
    }
}
