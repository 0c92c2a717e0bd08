//! Integration tests of the training crate: whole training jobs on real files in temp dirs.

mod parallel;
