"""End-to-end tests: the manifests and both services on a cluster (a real one, or the local ApiSim)."""
