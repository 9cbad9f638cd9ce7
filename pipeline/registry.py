"""The providers this hubsync delivers to. Adding one is writing its folder, with a ``provider.py`` describing it
(``pipeline.providers``), and naming it here."""

from __future__ import annotations

from pipeline.acd.provider import ACD
from pipeline.cegid.provider import CEGID_LOOP
from pipeline.providers import Registry

PROVIDERS = Registry([ACD, CEGID_LOOP])
