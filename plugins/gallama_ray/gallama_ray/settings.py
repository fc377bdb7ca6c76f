"""The ``ray:`` section of ``gallama.yaml``: where the cluster is and how each model's instances are placed.

.. code-block:: yaml

    ray:
      address: ray://head.example:10001   # or "auto"; `gallama run --ray-address` wins over it
      namespace: gallama
      runtime_env: {env_vars: {HF_HUB_OFFLINE: "1"}}   # for every worker
      models:
        qwen-32b: {num_gpus: 2, resources: {h200: 1}}
        embedder: {num_cpus: 2, runtime_env: {py_executable: /opt/venvs/embed/bin/python}}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Placement(BaseModel):
    """What one instance of a model asks the cluster for (Ray actor options)."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float | None = Field(None, ge=0, le=1024, description="CPUs per instance (default 1).")
    num_gpus: float | None = Field(None, ge=0, le=64, description="GPUs per instance (default: the number of GPUs "
                                   "the model entry's `gpus` gives a share, else 0).")
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources per instance, e.g. "
                                        "{h200: 1} to pin to nodes started with --resources.")
    runtime_env: dict[str, Any] | None = Field(None, description="Ray runtime_env of this model's workers (merged "
                                               "over the section's own).")


class RaySection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, description="Ray cluster to place workers on: 'auto', 'HOST:PORT' or "
                                "'ray://HOST:10001'. Without it (and without --ray-address) Ray is not used.")
    namespace: str = Field("gallama", min_length=1, max_length=200, description="Ray namespace of the actors.")
    runtime_env: dict[str, Any] | None = Field(None, description="Ray runtime_env of every worker.")
    max_restarts: int = Field(3, ge=-1, le=1000, description="Times Ray restarts a dead worker process in place "
                              "(-1: without limit); the front then reloads the model into it.")
    models: dict[str, Placement] = Field(default_factory=dict, description="Placement per served model name.")

    def placement(self, served_name: str) -> Placement:
        return self.models.get(served_name) or Placement()
