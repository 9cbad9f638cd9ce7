"""Local HTTP sandboxes that serve the providers' contracts, faults included, on one loopback port."""

from pipeline.sandbox.docstore import DocStore
from pipeline.sandbox.faults import FAULT_MODES, Fault, FaultSwitch
from pipeline.sandbox.server import SandboxServer

__all__ = ["FAULT_MODES", "DocStore", "Fault", "FaultSwitch", "SandboxServer"]
