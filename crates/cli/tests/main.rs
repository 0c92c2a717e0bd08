//! Integration tests: the real `modelforge` binary in temporary folders.

mod automation;
mod bad_input;
mod common;
#[cfg(feature = "mpi")]
mod distributed;
mod explain;
mod full_disk;
mod generation;
mod interop;
mod language_model;
mod pipeline;
mod pretrained;
mod resume;
mod serving;
mod serving_errors;
mod trust;
