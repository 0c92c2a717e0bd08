//! Integration tests: the real `modelforge` binary in temporary folders.

mod bad_input;
mod common;
mod pipeline;
mod resume;
mod serving;
