//! Integration tests: real msharefs mounts, real mmap, real processes.
//! Run as root with `cargo test --workspace` (see README).

mod common;
mod control;
mod memory;
mod mounting;
mod namespace;
mod programs;
mod scale;
