//! Whole-program tests through a real FUSE mount: each test starts the `llmfs` daemon in a
//! child process on a temporary store (see [`harness`]), drives it with ordinary file
//! system calls and external tools (`cp`, `diff`, `du`), and always unmounts in teardown.
//!
//! These tests need /dev/fuse and fusermount3 and fail (never skip) without them. The
//! language model is not needed: the filesystem's fast tier is what is exercised here.
//! pjdfstest and fsx run from `scripts/pjdfstest.sh` and `scripts/fsx.sh`.

mod harness;

mod cli;
mod concurrency;
mod crash;
mod damage;
mod data;
mod llm;
mod policy;
mod posix;
mod service;
mod store;
