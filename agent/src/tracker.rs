//! tracker (in progress).
