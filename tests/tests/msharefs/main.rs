//! Integration tests: real msharefs mounts, real mmap, real processes.
//! Run as root with `cargo test --workspace` (see README).

mod common;
mod control;
mod library;
mod memory;
mod mounting;
mod msharectl;
mod namespace;
mod programs;
mod scale;
mod security;
