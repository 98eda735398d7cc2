"""Patch, batch and sliding-window batch follow the device's free memory (free memory injected:
no GPU in CI; the real-GPU run is listed in docs/benchmarks.md)."""

import torch

from TransferSegLib.training.memory import activation_bytes_per_voxel, fit_training, sliding_window_batch
from TransferSegLib.training.networks import build_network, default_network_spec

GB = 2**30
CUDA = torch.device("cuda")


def _model(classes=29):
    return build_network(default_network_spec(1, classes))


def test_feature_maps_are_measured_from_the_network_on_the_meta_device():
    small = activation_bytes_per_voxel(_model(), (32, 32, 16), amp=True)
    assert activation_bytes_per_voxel(_model(), (32, 32, 16), amp=False) == 2 * small
    # 16 channels at full resolution through a dozen layers: hundreds of values per voxel
    assert 100 < small / 2 < 2000
    assert all(p.device.type == "cpu" for p in _model().parameters())


def test_an_8_gb_card_trains_128_cubed_patches_with_a_smaller_batch_and_a_big_card_keeps_the_request():
    model = _model()
    eight = fit_training(model, (128, 128, 128), 2, CUDA, amp=True, free=int(7.5 * GB))
    assert eight.patch_size == (128, 128, 128) and eight.batch_size >= 1
    assert eight.estimated_gb <= 0.6 * 7.5
    big = fit_training(model, (128, 128, 128), 2, CUDA, amp=True, free=70 * GB)
    assert (big.patch_size, big.batch_size, big.reason) == ((128, 128, 128), 2, "fits")


def test_too_little_memory_lowers_the_batch_then_the_patch_in_multiples_of_the_strides():
    fit = fit_training(_model(), (128, 128, 128), 2, CUDA, amp=True, free=1 * GB, multiple=(8, 8, 8))
    assert fit.batch_size == 1
    assert all(p < 128 and p % 8 == 0 for p in fit.patch_size)
    assert "patch lowered" in fit.reason and fit.estimated_gb <= 0.6


def test_the_cpu_keeps_the_configured_settings():
    fit = fit_training(_model(), (64, 64, 32), 2, torch.device("cpu"), amp=False)
    assert (fit.patch_size, fit.batch_size, fit.free_gb) == ((64, 64, 32), 2, None)
    assert sliding_window_batch(_model(), (64, 64, 32), torch.device("cpu"), amp=False) == 2


def test_the_sliding_window_batch_grows_with_free_memory_and_a_request_wins():
    model = _model()
    small = sliding_window_batch(model, (128, 128, 128), CUDA, amp=True, free=2 * GB)
    large = sliding_window_batch(model, (128, 128, 128), CUDA, amp=True, free=40 * GB)
    assert 1 <= small < large <= 8
    assert sliding_window_batch(model, (128, 128, 128), CUDA, amp=True, requested=3, free=40 * GB) == 3
