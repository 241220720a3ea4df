"""The local Kubernetes API endpoint used by tests, `make demo` and the benchmarks (docs/development/local-endpoint.md)."""
from .faults import Faults
from .server import ApiSim
from .status import ApiError

__all__ = ["ApiSim", "ApiError", "Faults"]
