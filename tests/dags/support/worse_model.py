"""A model worse than popularity, for the serving alert's tests: the published model with its
item factors shuffled across items (what it learnt, attached to the wrong items), saved under a
new id and never evaluated. Run with the trainer's interpreter:

    python worse_model.py ARTIFACTS_URI    # prints the new model's URI
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

from trainer.model.model_artifact import load_model
from trainer.storage import artifacts, layout
from trainer.storage.model_pointer import published_model_uri


def main(artifacts_uri: str) -> str:
    store = artifacts.ArtifactStore(os.environ.get("RECSYS_GCP_PROJECT"))
    model = load_model(store, published_model_uri(store, artifacts_uri))
    shuffled = np.random.default_rng(7).permutation(len(model.item_factors))
    worse = dataclasses.replace(model, model_id=model.model_id[:-10] + "0badbadbad",
                                item_factors=model.item_factors[shuffled],
                                item_popularity=model.item_popularity[shuffled])
    uri = layout.model_prefix(artifacts_uri, worse.model_id)
    worse.save(store, uri)
    return uri


if __name__ == "__main__":
    print(main(sys.argv[1]))
