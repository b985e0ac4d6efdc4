"""Test-time BatchNorm adaptation (`fruitnet.batchnorm`, eval and predict `adapt_bn=true`)."""

from __future__ import annotations

import pytest
import torch
from helpers import TRAINED_DATA, compose_cfg, train
from torch import nn

from fruitnet.batchnorm import NoBatchNormError, adapt_batchnorm, batchnorm_layers
from fruitnet.checkpoints import load_network
from fruitnet.data import SyntheticDataModule
from fruitnet.eval import run as run_eval
from fruitnet.predict import Predictor

EVAL = ["trainer=cpu", "trainer.precision=32-true", "data.num_workers=0", "verbose=false",
        "explain=false", *TRAINED_DATA]  # fmt: skip


def small_bn_net() -> nn.Module:
    torch.manual_seed(0)
    # Dropout before the BatchNorm: like EfficientNet's stochastic depth, it must not drop
    # anything while the statistics are taken
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4, 2),
    ).eval()  # fmt: skip


def test_adapt_batchnorm_takes_the_statistics_of_the_images_it_reads():
    net = small_bn_net()
    gen = torch.Generator().manual_seed(1)
    batches = [3.0 + 2.0 * torch.randn(6, 3, 8, 8, generator=gen) for _ in range(2)]
    with torch.no_grad():
        feats = [net[0](x) for x in batches]
    assert adapt_batchnorm(net, iter(batches)) == 12
    bn = net[2]
    # The plain average of the batches' statistics (equal batch sizes), dropout off
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).flatten(1).var(1) for f in feats]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    # modes and momentum as they were
    assert not any(m.training for m in net.modules()) and bn.momentum == 0.1
    net.train()
    adapt_batchnorm(net, iter(batches))
    assert all(m.training for m in net.modules())
    torch.testing.assert_close(bn.running_mean, mean)


def test_adapt_batchnorm_refuses_nets_without_batchnorm_and_empty_input():
    with pytest.raises(NoBatchNormError, match="no BatchNorm layers.*adapt_bn=false"):
        adapt_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3)), [torch.zeros(2, 3, 8, 8)])
    net = small_bn_net()
    net[2].running_mean.fill_(0.25)
    with pytest.raises(ValueError, match="at least 2 images to estimate statistics, got 0"):
        adapt_batchnorm(net, [])
    # Left as it was, not reset to the init's zeros
    assert torch.all(net[2].running_mean == 0.25) and int(net[2].num_batches_tracked) == 0
    assert net[2].momentum == 0.1 and not net.training


@pytest.fixture(scope="module")
def trained_bn(tmp_path_factory, data_dir):
    """ProxylessNAS-GPU (BatchNorm) trained one epoch on the synthetic set of `trained_cnn`."""
    run_dir = tmp_path_factory.mktemp("trained_bn")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRUITNET_OFFLINE", "1")
        mp.setenv("TORCH_HOME", str(run_dir / "torch_home"))
        recipe = [*TRAINED_DATA, "model=proxyless", "model.pretrained=false",
                  "trainer.max_epochs=1", "data.batch_size=16"]  # fmt: skip
        return train(recipe, run_dir, data_dir)


def test_eval_and_predict_adapt_to_the_same_test_images(trained_bn, data_dir, tmp_path):
    ckpt = trained_bn["best_ckpt"]
    plain = run_eval(compose_cfg([f"ckpt_path={ckpt}", *EVAL], tmp_path / "a", data_dir, "eval"))
    cfg = compose_cfg(
        [f"ckpt_path={ckpt}", *EVAL, "adapt_bn=true"], tmp_path / "b", data_dir, "eval"
    )
    adapted = run_eval(cfg)
    assert plain["adapt_bn"] is None
    layers = len(batchnorm_layers(load_network(ckpt)))
    assert adapted["adapt_bn"] == {"layers": layers, "images": adapted["num_test"]} and layers > 20
    # One epoch leaves the running statistics near the init: adapting moves the scores
    assert adapted["test_loss"] != pytest.approx(plain["test_loss"], rel=1e-3)

    # predict adapt_bn on the same files, read its own way, calls what eval scored
    dm = SyntheticDataModule(
        root=data_dir / "synthetic", train_per_class=20, test_per_class=8, num_workers=0
    )
    dm.setup("test")
    predictor = Predictor(load_network(ckpt))
    # the same batches as eval (update_bn averages per batch)
    batch = adapted["batch_size"]
    assert predictor.adapt(dm.test_set.paths, batch_size=batch) == adapted["num_test"]
    with torch.inference_mode():
        images = torch.stack([predictor.decode(p) for p in dm.test_set.paths])
        calls = predictor.probs(images).argmax(-1)
    labels = torch.tensor([dm.test_set[i][1] for i in range(len(dm.test_set))])
    assert (calls == labels).float().mean().item() == pytest.approx(adapted["test_acc"], abs=1e-6)
    assert not predictor.module.training


def test_eval_adapt_bn_on_the_basic_cnn_says_it_has_nothing_to_adapt(
    trained_cnn, data_dir, tmp_path
):
    cfg = compose_cfg(
        [f"ckpt_path={trained_cnn.ckpt}", *EVAL, "adapt_bn=true"], tmp_path, data_dir, "eval"
    )
    with pytest.raises(NoBatchNormError, match="basic CNN has none"):
        run_eval(cfg)
