//! The fleet: gantryd's distributed mode on etcd v3, where gantryd kept its projects in etcd
//! v2 — and where whoever could write etcd got root on every machine. Here etcd is input, not
//! instruction: operators write the spec (signed), hosts write only what they report, and each
//! host admits only a spec its own signers file and policy allow ([`admission`], [`policy`]).
//!
//! Key layout, all under `/handoff/fleets/{fleet}/` (`{fleet}` and `{host}` are plain names,
//! see [`keys::valid_name`]; who may write what: [`Keys::host_grants`],
//! [`Keys::operator_grants`]):
//!
//! | key | written by | value | lifetime |
//! |---|---|---|---|
//! | `spec/config` | operators | the config's text, validated as `check` does, in an envelope ([`sealed`]) | until replaced |
//! | `spec/rollout` | operators | [`records::RolloutSpec`] in an envelope: component, tag, previous tag, max parallel | until the next rollout |
//! | `spec/stops/{component}` | operators | [`records::StopSpec`] in an envelope: stop, kill or start, since when ([`stops`]) | until replaced |
//! | `spec/signatures/{path}` | operators | the SSHSIG of the record at `spec/{path}` ([`signing`]) | written with it |
//! | `rollout/turns/{slot}` | any host | [`records::TurnRecord`]: the host updating in that slot | the host's lease ([`rollout`]) |
//! | `rollout/updating/{host}` | that host | [`records::UpdatingRecord`]: mid-update; outlives a lost lease, which is how a lost host is noticed | until its turn ends |
//! | `rollout/halts/{host}` | that host | [`records::HaltRecord`]: the rollout it halted, and why | until its next halt |
//! | `hosts/{host}` | that host | [`HostRecord`]: alive since when | the agent's lease (TTL [`LEASE_TTL_SECS`] s, kept alive every third of it): gone when the agent is |
//! | `members/{host}` | that host | [`MemberRecord`]: last seen, refreshed with each keep-alive | kept, so a lost host stays listed as lost |
//! | `status/{host}/{component}` | that host | [`StatusRecord`]: tag, active address, state ([`records::state`]) | written only while the host's lease holds `hosts/{host}` (fencing) |
//! | `refusals/{host}` | that host | [`records::RefusalsRecord`]: the spec records it refuses, and why | while it refuses any |
//!
//! Agents watch `spec/` and `rollout/` from the revision they read, so they react to a
//! rollout, a stop or a freed turn at once. Whether a rollout runs, halted or is done is read
//! from the hosts' records ([`rollout::Snapshot::progress`]), never written into the spec.
//!
//! gantryd polled every 30 s and wrote a machine registry it never read; here the agent holds a
//! lease, so a dead host's registration disappears within the TTL, and every reader tells alive
//! from lost by that key alone.

pub mod accepted;
pub mod access;
pub mod admission;
pub mod agent;
pub mod etcd;
pub mod keys;
pub mod policy;
pub mod records;
pub mod registration;
pub mod rollout;
pub mod sealed;
pub mod signing;
pub mod spec;
pub mod stops;
pub mod store;

pub use etcd::Etcd;
pub use keys::Keys;
pub use records::{HostRecord, MemberRecord, StatusRecord};

/// The agent's lease: a host that stops renewing it is lost after this many seconds.
pub const LEASE_TTL_SECS: i64 = 10;

/// The endpoints when neither `--etcd` nor `$HANDOFF_ETCD` names any.
pub const DEFAULT_ENDPOINTS: &str = "http://127.0.0.1:2379";

/// The fleet when neither `--fleet` nor `$HANDOFF_FLEET` names one.
pub const DEFAULT_FLEET: &str = "default";
