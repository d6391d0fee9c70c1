"""One-click sample datasets: the engine's samples (trainer.samples, pure Python) added to a team like an upload."""
from __future__ import annotations

import tempfile

from django.core.files import File

from webapp.datasets.models import Dataset
from webapp.datasets.services import create_dataset


def available() -> list:
    from trainer.samples import SAMPLES

    return list(SAMPLES.values())


def create_from_sample(team, user, name: str) -> Dataset:
    """Write sample `name` and add it as a dataset (validation queued). KeyError for an unknown name."""
    from trainer.samples import SAMPLES, write_sample

    sample = SAMPLES[name]
    with tempfile.TemporaryDirectory() as folder:
        with open(write_sample(name, folder), "rb") as handle:
            return create_dataset(team, user, {"file": File(handle, name=sample.filename),
                                               "name": f"Sample: {sample.description}"[:200]})
