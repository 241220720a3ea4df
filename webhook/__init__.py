"""The mutating admission webhook: burst profiles, seccomp, and resource-pool placement for workflow pods."""
