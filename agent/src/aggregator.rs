//! aggregator (in progress).
