//! Container runtimes. Docker (through its Engine API) is the one handoff manages; a component
//! without `repo` has plain address backends and needs no runtime.

pub mod docker;
