//! provenance: tells whether a suspect language model is a copy, a derivative or a
//! distillation of a reference model.

pub mod bench;
pub mod endpoint;
pub mod fetch;
pub mod model;
pub mod probes;
pub mod serve;
pub mod suspect;
