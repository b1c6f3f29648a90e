//! The fleet's shared store: etcd v3, where gantryd kept its projects in etcd v2. One config per
//! fleet, one registration per host, one status per host and component; the agents and the
//! `fleet` commands read and write only through here.
//!
//! Key layout, all under `/handoff/fleets/{fleet}/` (`{fleet}` and `{host}` are plain names,
//! see [`keys::valid_name`]):
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `spec/config` | the config file's text, validated as `check` does before it is stored | until replaced |
//! | `spec/rollout` | [`RolloutRecord`]: component, tag, previous tag, max parallel, `running`/`halted`/`done`, reason | until the next rollout |
//! | `spec/turns/{slot}` | [`TurnRecord`]: the host updating in that slot | the host's lease ([`rollout`]) |
//! | `spec/stopped/{component}` | [`StopRecord`]: stopped (or killed) fleet-wide since when ([`stops`]) | until `fleet start` |
//! | `spec/updating/{host}` | marks a host mid-update: it outlives a lost lease, which is how a lost host is noticed | until its turn ends or the rollout halts |
//! | `hosts/{host}` | [`HostRecord`]: alive since when | the agent's lease (TTL [`LEASE_TTL_SECS`] s, kept alive every third of it): gone when the agent is |
//! | `members/{host}` | [`MemberRecord`]: last seen, refreshed with each keep-alive | kept, so a lost host stays listed as lost |
//! | `status/{host}/{component}` | [`StatusRecord`]: tag, active address, `ready`/`failed`/`stopping`/`stopped`/`killed` | written only while the host's lease holds `hosts/{host}` (fencing) |
//!
//! Agents watch `spec/` from the revision they read, so they react to a rollout at once.
//!
//! gantryd polled every 30 s and wrote a machine registry it never read; here the agent holds a
//! lease, so a dead host's registration disappears within the TTL, and every reader tells alive
//! from lost by that key alone.

pub mod etcd;
pub mod keys;
pub mod policy;
pub mod records;
pub mod registration;
pub mod rollout;
pub mod signing;
pub mod stops;

pub use etcd::Etcd;
pub use keys::Keys;
pub use records::{HostRecord, MemberRecord, RolloutRecord, StatusRecord, StopRecord, TurnRecord};

/// The agent's lease: a host that stops renewing it is lost after this many seconds.
pub const LEASE_TTL_SECS: i64 = 10;

/// The endpoints when neither `--etcd` nor `$HANDOFF_ETCD` names any.
pub const DEFAULT_ENDPOINTS: &str = "http://127.0.0.1:2379";

/// The fleet when neither `--fleet` nor `$HANDOFF_FLEET` names one.
pub const DEFAULT_FLEET: &str = "default";
