//! provenance: tells whether a suspect language model is a copy, a derivative or a
//! distillation of a reference model.

pub mod api;
pub mod app;
pub mod bench;
pub mod compare;
pub mod controls;
pub mod endpoint;
pub mod fetch;
pub mod fingerprint;
pub mod fuzz;
pub mod http;
pub mod identify;
pub mod jobs;
pub mod launch;
pub mod model;
pub mod probes;
pub mod quantized_forms;
pub mod read_back;
pub mod scan;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod suspect;
pub mod ui;
pub mod zoo;
