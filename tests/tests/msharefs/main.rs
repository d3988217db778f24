//! Integration tests: real msharefs mounts, real mmap, real processes.
//! Run as root through tools/test.sh, which builds the binaries first.

mod abuse;
mod common;
mod control;
mod denial;
mod library;
mod memory;
mod mounting;
mod msharectl;
mod namespace;
mod operator;
mod postgres;
mod preload;
mod programs;
mod restart;
mod revocation;
mod scale;
mod security;
mod service;
mod stopping;
mod transport;
mod truths;
mod upstream;
