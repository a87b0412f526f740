"""MTL end to end at toy scale: pretrain -> meta-transfer (SS only, hard tasks) -> EGNN on the SS backbone."""
import torch

import egnn.pretrain as P
from egnn.config import make_config
from egnn.evaluation import evaluate_config
from egnn.models import load_trained
from egnn.trainer import Trainer
from tests.conftest import SPLITS


def test_pretrain_meta_transfer_then_egnn_on_the_ss_backbone(tmp_path):
    base = dict(backbone="resnet12", widths="8,8,12,12", way=3, shot=1, query=2, eval_query=2, val_episodes=4,
                eval_batch=2, test_episodes=4, seed=1)
    Trainer(P.pretrain_config(base, iterations=3, val_every=3, lr=0.05, tasks_per_batch=16,
                              out=str(tmp_path / "pre")), SPLITS).fit(progress=False)
    pre = str(tmp_path / "pre" / "best.pt")
    # stage 2: MTL's classifier, only SS and the base learner's initialisation train, with hard tasks
    mtl = Trainer(make_config(**base, model="mtl", backbone_checkpoint=pre, hard_tasks=True, iterations=2,
                              tasks_per_batch=2, val_every=2, inner_steps=3, out=str(tmp_path / "mtl")), SPLITS)
    frozen = {k: v.clone() for k, v in mtl.method.backbone.state_dict().items() if not k.endswith(("scale", "shift"))}
    trainable = {n for n, p in mtl.method.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".scale", ".shift")) or n == "init" for n in trainable)
    mtl.fit(progress=False)
    after = mtl.method.backbone.state_dict()
    for k, v in frozen.items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(after[k], v), k  # pretrained weights untouched
    assert any(not torch.equal(after[k], torch.ones_like(after[k])) for k in after if k.endswith(".scale"))
    # stage 3: EGNN on the meta-transferred backbone, SS frozen; the stage-2 checkpoint records the architecture,
    # so stage 3 does not need the stage-1 file any more
    assert torch.load(tmp_path / "mtl" / "best.pt", weights_only=False)["backbone_arch"] == {
        "backbone": "resnet12", "widths": "8,8,12,12"}
    (tmp_path / "pre" / "best.pt").rename(tmp_path / "pre" / "moved.pt")
    egnn = Trainer(make_config(**{**base, "backbone": "resnet12-mtl"}, backbone_checkpoint=str(tmp_path / "mtl" / "best.pt"),
                               train_ss=False, iterations=2, tasks_per_batch=2, val_every=2, embedding=12,
                               node_features=8, edge_features=8, out=str(tmp_path / "egnn")), SPLITS)
    assert not any(p.requires_grad for p in egnn.method.backbone.parameters())
    egnn.fit(progress=False)
    tested = egnn.test()[0]
    # the saved EGNN-on-MTL model rebuilds from its checkpoint alone and scores the same episodes identically
    reloaded, cfg = load_trained(tmp_path / "egnn" / "best.pt")
    assert evaluate_config(reloaded, SPLITS["test"], cfg, cfg.test_episodes).per_episode == tested.per_episode
