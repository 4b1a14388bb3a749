//! p402 as a service under stress: crashes, full and stuck disks, sustained load, systemd, and hot reload.
//!
//! One test binary of four (one link each on a 2-core CI); each module
//! is one subject, sharing the harness in `tests/common`.

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod full_disk;
mod reload;
mod store_stall;
mod store_stress;
mod systemd;
