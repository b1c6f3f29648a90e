//! The use cases against fakes of every outside world (see `testkit`): what `update`, a rerun
//! after a crash, `stop`, `kill`, `restore`, `monitor` and `switch` do, decided without root,
//! a kernel or Docker. The real-kernel and real-Docker tests in `tests/` prove the same paths
//! against the real parts.

mod canary;
mod converge;
mod crash;
mod gateway;
mod ipv6;
mod links;
mod restore;
mod rollback;
mod rounds;
mod stop;
mod update;
