"""Extending egnn: a new method is one class and one registration, a new dataset one loader and one
registration; the trainer, the evaluation and ``predict`` need nothing else (they never name a method or a
dataset)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from egnn.config import make_config
from egnn.data import DATASETS, DatasetInfo, FewShotSplit, register_dataset
from egnn.data.images import decode
from egnn.methods import METHODS, FewShotMethod, MethodOutput, register_method
from egnn.predict import predict
from egnn.episodes import Episode
from egnn.graph import collate
from egnn.models import load_trained
from egnn.trainer import Trainer


class CosinePrototypes(FewShotMethod):
    """A toy method: each class is the mean of its labeled supports; queries score 10 x cosine similarity."""

    @classmethod
    def from_config(cls, backbone, cfg):
        return cls(backbone)

    def forward(self, batch, transductive=True):
        v, dense = self.embed(batch)  # (B, N, D)
        s = int(dense.support_mask[0].sum())
        onehot = F.one_hot(dense.y[:, :s].clamp_min(0), dense.way).float() * dense.labeled_mask[:, :s, None]
        protos = (onehot.transpose(1, 2) @ v[:, :s]) / onehot.sum(1)[..., None]  # (B, way, D)
        logits = 10 * F.normalize(self.queries(v, dense), dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)
        return MethodOutput(logits=logits, query_labels=self.queries(dense.y, dense))

    def loss(self, out):
        return F.cross_entropy(out.logits.flatten(0, 1), out.query_labels.flatten())


def stripes(classes: int, per_class: int = 6, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Class ``c``: stripes of period ``2 + c % 5`` at angle ``c // 5`` x 45 degrees, with noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for c in range(classes):
        period, angle = 2 + c % 5, (c // 5 % 4) * np.pi / 4
        wave = torch.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        noisy = wave + 0.3 * torch.randn(per_class, size, size, generator=g)
        out.append(((noisy.clamp(-1, 1) + 1) * 127.5).to(torch.uint8))
    return torch.stack(out)  # (classes, per_class, H, W)


def load_stripes(root=None, image_size=28):
    images = stripes(20, size=image_size)
    parts = {"train": range(0, 12), "val": range(12, 16), "test": range(16, 20)}
    return {name: FewShotSplit(images[list(ids)].flatten(0, 1)[:, None].contiguous(),
                               torch.arange(len(ids)).repeat_interleave(6), [f"stripes{c}" for c in ids],
                               name=f"stripes/{name}") for name, ids in parts.items()}


@pytest.fixture
def registered():
    register_method("cosine-prototypes")(CosinePrototypes)
    register_dataset(DatasetInfo("stripes", load_stripes, native_size=28, channels=1, natural=False,
                                 description="toy stripes", location=None, decode=decode, embedded=True))
    yield
    METHODS.pop("cosine-prototypes")
    DATASETS.pop("stripes")


def test_a_new_method_and_dataset_train_evaluate_and_predict(registered, tmp_path):
    cfg = make_config(dataset="stripes", model="cosine-prototypes", way=3, shot=1, query=2, query_max=0,
                      iterations=30, tasks_per_batch=8, val_every=15, val_episodes=20, test_episodes=60,
                      eval_batch=20, embedding=16, out=str(tmp_path / "run"), seed=1)
    trainer = Trainer(cfg)
    trainer.fit(progress=False)
    result = trainer.test()[0]
    assert result.protocol["dataset"] == "stripes" and result.accuracy > 0.5  # chance is 1/3
    # its checkpoint labels image files through the dataset's registered decoder
    images = stripes(20)
    for c in (16, 17):
        for i in range(6):
            folder = tmp_path / ("support" if i == 0 else "query") / f"stripes{c}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[c, i].numpy()).save(folder / f"{i}.png")
    labels = predict(tmp_path / "run" / "best.pt", tmp_path / "support", tmp_path / "query", device="cpu")
    # the toy's own scores on the same images (read back from the files), through the default class_probabilities:
    # a softmax of its logits
    method, _ = load_trained(tmp_path / "run" / "best.pt")
    order = torch.cat([images[16:18, 0], images[16:18, 1:].flatten(0, 1)])[:, None]  # supports, then the queries
    episode = Episode(order, torch.tensor([0, 1] + [0] * 5 + [1] * 5), torch.ones(2, dtype=torch.bool),
                      torch.arange(2), 2, 1, 5)
    with torch.inference_mode():
        want = method(collate([episode])).logits[0].softmax(-1)
    torch.testing.assert_close(labels.probabilities, want, rtol=1e-5, atol=1e-6)
