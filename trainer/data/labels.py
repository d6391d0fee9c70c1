"""The label <-> id mapping for classification: stable, so the same labels always get the same ids.

Ids follow the sorted labels: numerically when every label is a whole number ("2" before "10"), else by text.
Saved as JSON `{"id2label": {"0": "billing", ...}, "label2id": {"billing": 0, ...}}` (string keys, as
transformers' config.json writes id2label); `load` also accepts a bare id2label object.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class LabelMapping:
    labels: tuple[str, ...]

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> "LabelMapping":
        unique = set(labels)
        numeric = all(label.lstrip("-").isdigit() for label in unique)
        return cls(tuple(sorted(unique, key=int if numeric else str)))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        return {"id2label": {str(i): label for i, label in enumerate(self.labels)}, "label2id": self.label2id}

    @classmethod
    def from_dict(cls, data: dict) -> "LabelMapping":
        id2label = data.get("id2label", data)
        return cls(tuple(id2label[key] for key in sorted(id2label, key=int)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "LabelMapping":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
