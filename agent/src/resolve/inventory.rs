//! Pods from an inventory YAML file (in progress).
