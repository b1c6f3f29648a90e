//! handoff: zero-downtime updates of containers and services with kernel DNAT and conntrack
//! draining, no proxy in the data path.
//!
//! The layers, arrows pointing down only: [`cli`] (one file per subcommand) → [`ops`] (the use
//! cases, returning data) → [`kernel`] (nftables, conntrack), [`runtime`] (Docker), [`health`]
//! (network checks), [`config`], [`state`], [`fleet`] (the fleet's store in etcd); [`identity`],
//! [`ports`], [`trust`], [`error`] and [`crash`] are leaves.

pub mod cli;
pub mod config;
pub mod crash;
pub mod error;
pub mod fleet;
pub mod health;
pub mod identity;
pub mod kernel;
pub mod ops;
pub mod ports;
pub mod runtime;
pub mod state;
pub mod trust;
