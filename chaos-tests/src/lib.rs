//! Placeholder: the chaos harness arrives with the chaos-tests issue.
