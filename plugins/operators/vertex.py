"""Vertex AI custom container training job with a templated image (``RECSYS_RUNTIME=vertex``).

Imported only when the Vertex runtime is in use: the Google provider's Vertex module takes
seconds to import, which every DAG parse would otherwise pay.
"""

from __future__ import annotations

from airflow.providers.google.cloud.operators.vertex_ai.custom_job import (
    CreateCustomContainerTrainingJobOperator,
)


class TemplatedImageCustomContainerTrainingJobOperator(CreateCustomContainerTrainingJobOperator):
    """The stock operator, plus ``container_uri`` (image chosen per run) and ``labels`` (carry the
    run id) as template fields. Nothing else changes."""

    template_fields = (*CreateCustomContainerTrainingJobOperator.template_fields, "container_uri", "labels")
