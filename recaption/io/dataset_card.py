"""The Hugging Face dataset card (``README.md`` with YAML front matter) beside a run's data.

It names the data files and their features, so ``datasets.load_dataset("OUT/data")`` reads
the folder with the right types without inferring them from its first few samples (which,
for WebDataset shards, takes a score no early sample has as null and then fails, and takes
the first sample's image type as the only one). The same card serves ``push_to_hub``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from recaption.io.atomic import atomic_path

CARD_NAME = "README.md"


def write_dataset_card(folder: Path, data_glob: str, features: list[dict], what: str) -> Path:
    """``features``: the card's feature list (``nested_columns.hf_yaml_feature`` items)."""
    front = {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data_glob}]}],
        "dataset_info": {"features": features},
    }
    text = (
        "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n"
        f"# recaption output\n\n{what}\n\n"
        "Load it with Hugging Face datasets:\n\n"
        "```python\nimport datasets\n"
        f'ds = datasets.load_dataset("path/to/this/folder", split="train")  # written to {folder}\n```\n'
    )
    target = folder / CARD_NAME
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
