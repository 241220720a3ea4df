"""Code shared by Burstflow's two services: CLI, clock, CEL, the Kubernetes gateway and its local test endpoint."""
