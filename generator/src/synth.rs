//! The learner: minimal NetworkPolicies from a flow graph (in progress).
