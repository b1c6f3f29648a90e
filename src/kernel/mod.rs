//! The kernel wing: everything that talks to Linux networking directly. [`nfnetlink`] is the
//! socket plumbing both halves share; [`conntrack`] reads and expires the connection tracking
//! table; [`netfilter`] owns handoff's nftables table and the hole in Docker's FORWARD policy;
//! [`bridge_port`] puts a container's bridge port in hairpin mode and [`interface`] reads an
//! interface's addresses (both route netlink, through `route_netlink`).
//! Nothing here knows about components' life cycles: that is `ops`, one floor up.

pub mod bridge_port;
pub mod conntrack;
pub mod interface;
pub mod netfilter;
pub mod nfnetlink;
mod route_netlink;
