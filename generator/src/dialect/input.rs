//! The learner's egress to DNS names, as the dialects read it: the
//! learner's own output type ([`crate::synth::FqdnEgress`]).

pub use crate::synth::{AddressSeen, FqdnEgress};
