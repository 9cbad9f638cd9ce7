"""One Celery task per step of every installed provider (``pipeline.registry``), named as the provider says.

Each task runs its step through ``tasks.chains.run_chain_step`` and only decides retry, dead letter or the next
step; the step itself is plain Python in the provider's folder.
"""

from __future__ import annotations

from typing import Any

from pipeline.providers import ChainStep, Provider
from pipeline.registry import PROVIDERS
from tasks import app
from tasks.chains import run_chain_step


def define(provider: Provider, step: ChainStep) -> Any:
    """Define and register the Celery task that runs ``step`` of ``provider``'s chain."""
    functions = provider.step_functions

    def run(self: Any, record_id: str, generation: int) -> None:
        run_chain_step(self, step.name, record_id, generation, functions, on_error=provider.on_error)

    run.__name__ = run.__qualname__ = f"{provider.name}_{step.name}"
    run.__doc__ = step.run.__doc__
    return app.task(name=step.task, bind=True, max_retries=None)(run)


STEP_TASKS = {step.task: define(provider, step) for provider in PROVIDERS for step in provider.steps}
"""Every chain step's task, by task name."""
