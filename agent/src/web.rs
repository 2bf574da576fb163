//! web (in progress).
