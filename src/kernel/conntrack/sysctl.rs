//! The conntrack sysctls handoff reads (per-state timeouts, to tell idle time) and the one it
//! sets (event delivery for new flows).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::flow::FlowState;

/// The configured per-state TCP timeouts of this network namespace.
#[derive(Debug, Default, Clone)]
pub struct StateTimeouts(pub(crate) HashMap<&'static str, u32>);

impl StateTimeouts {
    pub fn read() -> Self {
        let mut timeouts = HashMap::new();
        for state in [
            FlowState::SynSent,
            FlowState::SynRecv,
            FlowState::Established,
            FlowState::FinWait,
            FlowState::CloseWait,
            FlowState::LastAck,
            FlowState::TimeWait,
            FlowState::Close,
            FlowState::Udp,
        ] {
            if let Some(name) = state.timeout_sysctl() {
                let path = format!("/proc/sys/net/netfilter/{name}");
                if let Some(value) = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    timeouts.insert(name, value);
                }
            }
        }
        StateTimeouts(timeouts)
    }

    pub(crate) fn get(&self, state: FlowState) -> Option<u32> {
        self.0.get(state.timeout_sysctl()?).copied()
    }
}

const EVENTS_SYSCTL: &str = "/proc/sys/net/netfilter/nf_conntrack_events";

/// What [`ensure_events_for_new_flows`] found, and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsSetting {
    /// 1: every new flow reports its end.
    On,
    /// It was 2 ("only while a listener exists") and is 1 now.
    TurnedOn,
    /// 0: events were turned off on purpose and are left so.
    Off,
    /// It could not be read or written (a read-only `/proc/sys`, a host without the sysctl).
    Unchangeable(String),
}

impl EventsSetting {
    /// What an operator should know when the setting is not what the drain wants.
    pub fn warning(&self) -> Option<String> {
        let consequence = "flows created while no drain listens will not report their end, \
                           so a later drain sees it by looking them up (about 1 s later)";
        match self {
            EventsSetting::On | EventsSetting::TurnedOn => None,
            EventsSetting::Off => Some(format!(
                "conntrack events are off ({EVENTS_SYSCTL} = 0): {consequence}"
            )),
            EventsSetting::Unchangeable(why) => Some(format!("{why}: {consequence}")),
        }
    }
}

static CHECKED: AtomicBool = AtomicBool::new(false);

/// [`ensure_events_for_new_flows`], once per process: the first call's finding, `None` after
/// that. A `monitor` that replaces containers for weeks on a host whose `/proc/sys` is
/// read-only warns once, not at every switch.
pub fn ensure_events_for_new_flows_once() -> Option<EventsSetting> {
    if CHECKED.swap(true, Ordering::SeqCst) {
        return None;
    }
    Some(ensure_events_for_new_flows())
}

/// Make sure flows created from now on report their end.
///
/// With `nf_conntrack_events = 2` (the kernel's default: "only when someone listens"), a flow
/// created while no ctnetlink listener exists never reports its end, and a drain started later
/// could only poll. Setting it to 1 gives every new flow the (small) event extension. The
/// setting is host-wide (per network namespace) and is left at 1: restoring 2 after a drain
/// would take the events away from the flows the *next* drain waits for. A value of 0 means
/// events were turned off on purpose: it is left alone. Nothing here is an error: without
/// events the drain still works, by per-flow lookups.
fn ensure_events_for_new_flows() -> EventsSetting {
    let current = match std::fs::read_to_string(EVENTS_SYSCTL) {
        Ok(text) => text,
        Err(e) => return EventsSetting::Unchangeable(format!("cannot read {EVENTS_SYSCTL} ({e})")),
    };
    match current.trim() {
        "0" => EventsSetting::Off,
        "1" => EventsSetting::On,
        other => match std::fs::write(EVENTS_SYSCTL, "1") {
            Ok(()) => EventsSetting::TurnedOn,
            Err(e) => EventsSetting::Unchangeable(format!(
                "cannot set {EVENTS_SYSCTL} from {other} to 1 ({e})"
            )),
        },
    }
}
