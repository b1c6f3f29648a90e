//! `net.ipv4.conf.all.route_localnet`: without it the kernel will not route a packet whose
//! source or destination is 127.0.0.0/8 off the loopback device, so a DNAT of a host client's
//! 127.0.0.1:PORT to a backend goes nowhere. Set only for components that say
//! `localhostClients`, and never without the guard the ruleset keeps (`localnet_guard`): with
//! route_localnet on, a neighbour could otherwise reach services bound to 127.0.0.1
//! (CVE-2020-8558, the reason kube-proxy added the same guard). Never turned off again: other
//! software may rely on it once it is on.

use anyhow::Result;

use crate::error::Failure;

const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

/// Turn route_localnet on, if it is not; refused (a read-only /proc/sys) is a host error that
/// says what it costs.
pub fn ensure_route_localnet() -> Result<()> {
    if std::fs::read_to_string(ROUTE_LOCALNET).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(ROUTE_LOCALNET, "1").map_err(|error| {
        Failure::host(format!(
            "localhostClients: cannot set net.ipv4.conf.all.route_localnet to 1 ({error}); \
             without it clients on the host cannot reach the component at 127.0.0.1 (set it, \
             or drop localhostClients from the config)"
        ))
    })?;
    Ok(())
}
