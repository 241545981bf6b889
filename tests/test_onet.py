"""ONet's conditional models: the architectures written here, and ONet's checkpoints and configs read safely.

The checkpoints are built as ONet's training code writes them: ``torch.save`` of the model's state dict with
ONet's names, an Adam state, the counters and a numpy float64 ``loss_val_best``; in the zip format and in
the format before PyTorch 1.6 (ONet's released models), with tensors tagged as saved on a GPU and numpy 1's
module names, as those files are.
"""

import io
import textwrap

import numpy as np
import pytest
import torch

from occnet.train.checkpoint import CheckpointError
from occnet.train.onet import ConditionalOccNet, OnetArchitecture, measure_statistics
from occnet.train.onet_checkpoint import infer_architecture, load_onet_checkpoint, read_onet_config

SMALL = {"pointnet_resnet": OnetArchitecture("pointnet_resnet", 32, 24, 40),
         "pointnet_simple": OnetArchitecture("pointnet_simple", 32, 24, 40),
         "voxel_simple": OnetArchitecture("voxel_simple", 16, 512, 24),
         "legacy": OnetArchitecture("pointnet_resnet", 32, 24, 40, legacy=True)}


def onet_model(arch: OnetArchitecture, seed: int = 0) -> ConditionalOccNet:
    """A model as training leaves one: PyTorch's initialisation, the weights ONet's initialisation zeroes (the
    code's projections, each block's last layer) drawn like the others, and batch-norm statistics measured on
    the activations of random observations and points, so that logits have the scale of a trained model's."""
    torch.manual_seed(seed)
    model = ConditionalOccNet(arch)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if "gamma" in name or "beta" in name or name.endswith("fc_1.weight"):
                fan_in = tensor[0].numel()
                tensor.copy_((torch.rand(tensor.shape) * 2 - 1) / fan_in ** 0.5 + (1.0 * ("gamma.bias" in name)))
    measure_statistics(model, [(torch.rand(4, 256, 3) - 0.5, observation(arch, 4, seed=seed + batch))
                               for batch in range(4)])
    return model


def observation(arch: OnetArchitecture, batch: int = 2, points: int = 300, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if arch.observation == "voxels":
        return (torch.rand(batch, 32, 32, 32, generator=generator) > 0.7).float()
    return torch.rand(batch, points, 3, generator=generator) - 0.5


def onet_bytes(model: ConditionalOccNet, zip_format: bool = True, gpu: bool = False) -> bytes:
    """What ONet's CheckpointIO writes for ``model``; ``gpu`` tags the tensors as saved on ``cuda:0`` and names
    numpy 1's modules (as ONet's released files do; pre-1.6 format only, where the tags are plain bytes)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    model(torch.rand(2, 8, 3), observation(model.arch)).sum().backward()
    optimizer.step()
    model.eval()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch_it": 12, "it": 34000,
                "loss_val_best": np.float64(0.0731)}, buffer, _use_new_zipfile_serialization=zip_format)
    data = buffer.getvalue()
    if gpu:
        assert not zip_format
        data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
        data = data.replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
    return data


def test_the_architectures_have_onets_sizes():
    """ONet's released point-cloud model has 10.4 M parameters, its voxel model 7.9 M."""
    count = {name: sum(p.numel() for p in ConditionalOccNet(arch).parameters())
             for name, arch in (("pointcloud", OnetArchitecture()), ("voxels", OnetArchitecture("voxel_simple", 256)))}
    assert count == {"pointcloud": 10_373_889, "voxels": 7_857_473}
    model = ConditionalOccNet(OnetArchitecture()).eval()
    assert model(torch.rand(2, 5, 3), torch.rand(2, 300, 3)).shape == (2, 5)
    assert {"decoder.block4.bn_1.conv_gamma.weight", "decoder.bn.bn.running_var", "encoder.block_4.shortcut.weight",
            "encoder.fc_c.bias"} <= set(model.state_dict())


def test_conditional_batch_norm_folds_into_one_affine_map_per_shape():
    model = onet_model(SMALL["legacy"])
    x, c = torch.randn(3, 40, 7), torch.randn(3, 32)
    norm = model.decoder.bn
    scale, shift = norm.folded(c)
    torch.testing.assert_close(norm(x, c), x * scale[:, :, None] + shift[:, :, None], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("zip_format", [True, False])
def test_onet_checkpoints_load_with_their_architecture_and_outputs(tmp_path, name, zip_format):
    model = onet_model(SMALL[name])
    (tmp_path / "model_best.pt").write_bytes(onet_bytes(model, zip_format))
    loaded = load_onet_checkpoint(tmp_path / "model_best.pt")
    assert loaded.architecture == SMALL[name] and loaded.config.threshold == 0.2
    points, seen = torch.rand(2, 50, 3) - 0.5, observation(SMALL[name])
    with torch.no_grad():
        torch.testing.assert_close(loaded.network()(points, seen), model(points, seen), rtol=0, atol=0)


def test_a_released_style_file_saved_on_a_gpu_with_numpy_1_loads(tmp_path):
    model = onet_model(SMALL["pointnet_resnet"])
    data = onet_bytes(model, zip_format=False, gpu=True)
    assert b"cuda:0" in data and b"numpy.core.multiarray" in data
    (tmp_path / "onet_pcl2mesh.pt").write_bytes(data)
    loaded = load_onet_checkpoint(tmp_path / "onet_pcl2mesh.pt")
    assert all(tensor.device.type == "cpu" for tensor in loaded.weights.values())
    assert loaded.architecture == SMALL["pointnet_resnet"]


class Payload:
    def __reduce__(self):
        return (print, ("this ran",))


@pytest.mark.parametrize("change,match", [
    (lambda s: {**s, "payload": Payload()}, "refused: it holds objects that safe .weights_only. loading does not "
                                            "allow, so it could run code"),
    (lambda s: {**s, "scheduler": {}}, "not an ONet checkpoint: unexpected entries scheduler"),
    (lambda s: {**s, "occnet": {"threshold": 2.0, "cloud_points": 300}}, "its occnet entry must hold a threshold "
                                                                          r"in \(0, 1\)"),
    (lambda s: {k: v for k, v in s.items() if k != "model"}, "not an ONet checkpoint .no 'model' entry"),
    (lambda s: {**s, "model": {k: v for k, v in s["model"].items() if k != "decoder.block2.fc_0.bias"}},
     "its weights do not fit encoder pointnet_resnet 24 wide, c_dim 32, decoder cbatchnorm 40 wide: missing "
     "decoder.block2.fc_0.bias"),
    (lambda s: {**s, "model": {**s["model"], "decoder.fc_z.weight": torch.zeros(40, 8)}},
     "it has a latent code z .z_dim > 0"),
    (lambda s: {**s, "model": {k.replace("conv_gamma", "gamma"): v for k, v in s["model"].items()}},
     "its decoder is not ONet's cbatchnorm decoder"),
    (lambda s: {**s, "model": {k: v for k, v in s["model"].items() if k.startswith("decoder.")}},
     "its weights are not ONet's encoder and decoder .top-level names: decoder."),
    (lambda s: {**s, "model": {**s["model"], "decoder.fc_out.bias": torch.tensor([float("nan")])}},
     "its weights hold NaN or infinite values"),
])
def test_anything_else_is_one_line(tmp_path, change, match):
    model = onet_model(SMALL["pointnet_resnet"])
    state = torch.load(io.BytesIO(onet_bytes(model)), weights_only=False)
    torch.save(change(state), tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=match) as caught:
        load_onet_checkpoint(tmp_path / "bad.pt")
    assert "\n" not in str(caught.value)


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path):
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint .neither a zip archive nor the format before"):
        load_onet_checkpoint(tmp_path / "noise.pt")


def write_config(folder, text: str, name: str = "onet.yaml"):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_onets_config_gives_the_architecture_and_the_threshold(tmp_path, monkeypatch):
    """ONet's configs inherit from a path relative to its repository's root and lie over its default.yaml."""
    write_config(tmp_path, """
        method: onet
        data: {input_type: pointcloud, pointcloud_n: 300}
        model: {encoder_latent: null, decoder: cbatchnorm, encoder: pointnet_resnet,
                encoder_kwargs: {hidden_dim: 24}, decoder_kwargs: {hidden_size: 40}, c_dim: 32, z_dim: 0}
        test: {threshold: 0.2}
        """, "configs/pointcloud/onet.yaml")
    pretrained = write_config(tmp_path, "inherit_from: configs/pointcloud/onet.yaml\ntest:\n  threshold: 0.35\n",
                              "configs/pointcloud/onet_pretrained.yaml")
    config = read_onet_config(pretrained)
    assert config.architecture == SMALL["pointnet_resnet"] and config.threshold == 0.35 and config.cloud_points == 300
    (tmp_path / "model_best.pt").write_bytes(onet_bytes(onet_model(SMALL["pointnet_resnet"])))
    assert load_onet_checkpoint(tmp_path / "model_best.pt", pretrained).config == config
    bare = write_config(tmp_path, "model: {decoder: cbatchnorm, encoder: voxel_simple, z_dim: 0}\n", "bare.yaml")
    assert read_onet_config(bare).architecture == OnetArchitecture("voxel_simple", 512, 512, 256)
    assert read_onet_config(bare).threshold == 0.5                       # default.yaml's, as ONet reads it


@pytest.mark.parametrize("text,match", [
    ("model: {decoder: cbatchnorm, encoder: pointnet_resnet, c_dim: 64, z_dim: 0, "
     "encoder_kwargs: {hidden_dim: 24}, decoder_kwargs: {hidden_size: 40}}",
     "its weights are for encoder pointnet_resnet 24 wide, c_dim 32, .* describes .*c_dim 64"),
    ("model: {decoder: simple, encoder: pointnet_resnet, z_dim: 0}", "model.decoder is 'simple'"),
    ("model: {decoder: cbatchnorm, encoder: resnet18, z_dim: 0}", "model.encoder is 'resnet18'"),
    ("model: {decoder: cbatchnorm, encoder: pointnet_resnet}", "model.z_dim is 64"),
    ("model: {decoder: cbatchnorm, encoder: pointnet_resnet, z_dim: 0}\ntest: {threshold: 2}",
     "test.threshold must be a probability"),
    ("inherit_from: configs/missing.yaml\n", "inherits from configs/missing.yaml, found neither"),
    ("inherit_from: onet.yaml\n", "its inherit_from chain loops back"),
    ("[1, 2", "not a YAML config"),
    ("- a list\n", "not a YAML config .a list, not a mapping."),
])
def test_a_config_that_does_not_fit_is_one_line(tmp_path, text, match):
    (tmp_path / "model_best.pt").write_bytes(onet_bytes(onet_model(SMALL["pointnet_resnet"])))
    config = write_config(tmp_path, text)
    with pytest.raises(CheckpointError, match=match) as caught:
        load_onet_checkpoint(tmp_path / "model_best.pt", config)
    assert "\n" not in str(caught.value)


def test_infer_architecture_reads_sizes_from_shapes():
    for arch in SMALL.values():
        assert infer_architecture(ConditionalOccNet(arch).state_dict()) == arch
