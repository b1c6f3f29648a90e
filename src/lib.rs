//! handoff: zero-downtime updates of containers and services with kernel DNAT and conntrack
//! draining, no proxy in the data path.

pub mod commands;
pub mod config;
pub mod conntrack;
pub mod crash;
pub mod deploy;
pub mod drain;
pub mod error;
pub mod health;
pub mod netfilter;
pub mod nfnetlink;
pub mod progress;
pub mod runtime;
pub mod state;
pub mod view;
