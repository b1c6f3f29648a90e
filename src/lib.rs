//! handoff: zero-downtime updates of containers and services with kernel DNAT and conntrack
//! draining, no proxy in the data path.

pub mod config;
pub mod conntrack;
pub mod error;
pub mod netfilter;
