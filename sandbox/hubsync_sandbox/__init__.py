"""What hubsync is developed and tested with, never deployed against a firm (the hubsync-sandbox distribution).

Local HTTP sandboxes that serve the providers' contracts, faults included, on one loopback port; the demo;
sample events; a private redis-server; the world the fault suite and the benchmark run in.
"""

from hubsync_sandbox.docstore import DocStore
from hubsync_sandbox.faults import FAULT_MODES, Fault, FaultSwitch
from hubsync_sandbox.server import SandboxServer

__all__ = ["FAULT_MODES", "DocStore", "Fault", "FaultSwitch", "SandboxServer"]
