//! Pods from the lab's state file (in progress).
