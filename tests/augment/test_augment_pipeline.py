"""Batched per-sample augmentation: randomness, reproducibility, exact geometry, params, dtypes, devices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from phenossl.augment import (
    PRESETS,
    Affine,
    Augmenter,
    Blur,
    CenterCrop,
    Composition,
    Erasing,
    Flip,
    Intensity,
    RandomCrop,
    Rotation,
    eval_view,
    load_composition,
    preview_views,
)
from phenossl.errors import ConfigError, InputError

EVERY_KIND = (
    Rotation(),
    CenterCrop(fraction=0.8),
    RandomCrop(),
    Flip(),
    Affine(p=1.0),
    Intensity(p=1.0),
    Blur(p=1.0),
    Erasing(p=1.0),
)


def compose(*transforms, name: str = "test") -> Composition:
    return Composition(name=name, transforms=transforms)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_tiles(batch: int = 4, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=seeded(seed))


def pixel_centres(size: int) -> torch.Tensor:
    """Normalised x (or y) of each pixel centre, align_corners=False."""
    return (torch.arange(size, dtype=torch.float64) + 0.5) * 2 / size - 1


def coordinate_tiles(batch: int, size: int) -> torch.Tensor:
    """Channel 0 = normalised x of each pixel centre, channel 1 = y: bilinear sampling reproduces them exactly
    so a view shows, pixel by pixel, which tile point it was sampled from."""
    centres = pixel_centres(size)
    x = centres[None, :].expand(size, size)
    y = centres[:, None].expand(size, size)
    return torch.stack([x, y])[None].expand(batch, 2, size, size).contiguous()


def central_blob(batch: int = 8, size: int = 64, sigma: float = 4.0) -> torch.Tensor:
    centre = (size - 1) / 2
    grid = torch.arange(size, dtype=torch.float32) - centre
    blob = torch.exp(-(grid[None, :] ** 2 + grid[:, None] ** 2) / (2 * sigma**2))
    return blob[None, None].expand(batch, 1, size, size).contiguous()


def centroid(views: torch.Tensor) -> torch.Tensor:
    """(B, 2) intensity centroid (x, y) in pixels of channel 0, background (the minimum) removed."""
    image = views[:, 0] - views[:, 0].amin(dim=(1, 2), keepdim=True)
    index = torch.arange(image.shape[-1], dtype=image.dtype)
    total = image.sum(dim=(1, 2))
    return torch.stack([(image.sum(1) * index).sum(1) / total, (image.sum(2) * index).sum(1) / total], dim=1)


def column(augmenter: Augmenter, params: torch.Tensor, name: str) -> torch.Tensor:
    return params[:, augmenter.param_names.index(name)]


# --- shapes, dtypes, devices --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_presets_give_views_of_the_training_size_and_params_of_param_dim(name):
    augmenter = Augmenter(load_composition(name), out_size=24)
    views, params = augmenter(random_tiles(batch=5, size=40), seeded())
    assert views.shape == (5, 3, 24, 24) and views.dtype == torch.float32
    assert params.shape == (5, augmenter.param_dim) and params.dtype == torch.float32
    assert len(set(augmenter.param_names)) == augmenter.param_dim


def test_param_layout_is_named_per_transform_in_list_order():
    augmenter = Augmenter(load_composition("morphology"), out_size=16)
    assert augmenter.param_names[:4] == (
        "0.rotation.applied",
        "0.rotation.cos",
        "0.rotation.sin",
        "1.center_crop.applied",
    )
    assert augmenter.param_dim == 3 + 1 + 6 + 2 + 2  # rotation, crop, affine, flip, blur


def test_half_precision_channels_last_input_keeps_its_dtype_and_layout():
    x = random_tiles(size=40).half().contiguous(memory_format=torch.channels_last)
    views, params = Augmenter(load_composition("context"), 24)(x, seeded())
    assert views.dtype == torch.float16 and views.is_contiguous(memory_format=torch.channels_last)
    assert params.dtype == torch.float32 and torch.isfinite(views).all()


def test_float64_input_stays_float64():
    views, _ = Augmenter(load_composition("morphology"), 16)(random_tiles().double(), seeded())
    assert views.dtype == torch.float64


@pytest.mark.parametrize("name", [*PRESETS, "every kind"])
@pytest.mark.parametrize(
    "make_input",
    [lambda: torch.randn(6, 3, 48, 48, generator=seeded(1)), lambda: torch.zeros(6, 3, 48, 48)],
    ids=["randn", "zeros"],
)
def test_views_are_finite_for_every_preset(name, make_input):
    composition = compose(*EVERY_KIND) if name == "every kind" else load_composition(name)
    views, params = Augmenter(composition, 24)(make_input(), seeded())
    assert torch.isfinite(views).all() and torch.isfinite(params).all()


def test_bad_batches_and_sizes_are_explained():
    augmenter = Augmenter(load_composition("none"), 16)
    with pytest.raises(InputError, match=r"\(B, C, S, S\)"):
        augmenter(torch.rand(3, 16, 16))
    with pytest.raises(InputError, match="non-empty"):
        augmenter(torch.rand(0, 1, 16, 16))
    with pytest.raises(InputError, match="floating-point"):
        augmenter(torch.zeros(2, 1, 16, 16, dtype=torch.uint16))
    with pytest.raises(InputError, match="square"):
        augmenter(torch.rand(2, 1, 16, 20))
    with pytest.raises(InputError, match="generator is on cpu but the batch is on meta"):
        augmenter(torch.empty(2, 1, 16, 16, device="meta"), seeded())
    with pytest.raises(ConfigError, match="out_size"):
        Augmenter(load_composition("none"), 0)


def test_one_resampling_for_all_geometric_transforms(monkeypatch):
    calls = []
    original = F.grid_sample
    monkeypatch.setattr(
        F, "grid_sample", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    )
    Augmenter(load_composition("context"), 16)(random_tiles(), seeded())
    assert len(calls) == 1


# --- randomness ---------------------------------------------------------------------------------------------


def test_identical_tiles_in_one_batch_get_different_views():
    tiles = random_tiles(batch=1, size=40).expand(2, 3, 40, 40)
    for name in ("context", "morphology"):
        views, params = Augmenter(load_composition(name), 24)(tiles, seeded())
        assert not torch.allclose(views[0], views[1])
        assert not torch.equal(params[0], params[1])


def test_same_seed_same_views_other_seed_other_views():
    augmenter = Augmenter(compose(*EVERY_KIND), 24)
    tiles = random_tiles(size=40)
    first, second, other = (augmenter(tiles, seeded(seed)) for seed in (7, 7, 8))
    assert torch.equal(first.views, second.views) and torch.equal(first.params, second.params)
    assert not torch.equal(first.views, other.views)


def test_probability_zero_is_the_identity_exactly():
    composition = compose(*(spec.model_copy(update={"p": 0.0}) for spec in EVERY_KIND))
    augmenter = Augmenter(composition, 32)
    tiles = torch.randn(4, 3, 32, 32, generator=seeded())
    views, params = augmenter(tiles, seeded())
    assert torch.equal(views, tiles)
    applied = [
        i
        for i, name in enumerate(augmenter.param_names)
        if name.endswith((".applied", "horizontal", "vertical"))
    ]
    assert params[:, applied].eq(0).all()


def test_probability_applies_to_about_that_share_of_samples():
    augmenter = Augmenter(compose(Rotation(p=0.3)), 8)
    _, params = augmenter(torch.rand(2000, 1, 8, 8), seeded())
    assert 0.25 < column(augmenter, params, "0.rotation.applied").mean() < 0.35


# --- geometry -----------------------------------------------------------------------------------------------


def test_rotation_by_multiples_of_90_equals_rot90():
    augmenter = Augmenter(compose(Rotation(multiples_of_90=True)), 20)
    tiles = random_tiles(batch=16, size=20)
    views, params = augmenter(tiles, seeded())
    quarters = torch.round(torch.atan2(params[:, 2], params[:, 1]) / (math.pi / 2)).long() % 4
    assert set(quarters.tolist()) == {0, 1, 2, 3}
    for view, tile, quarter in zip(views, tiles, quarters.tolist(), strict=True):
        torch.testing.assert_close(view, torch.rot90(tile, quarter, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_rotation_angle_is_recovered_from_params():
    """The coordinate channels show that each view point was sampled at R(-angle) of itself."""
    augmenter = Augmenter(compose(Rotation(degrees=180), CenterCrop(fraction=0.7)), 24)
    views, params = augmenter(coordinate_tiles(64, 48), seeded())
    angle = torch.atan2(params[:, 2], params[:, 1]).double()
    assert angle.min() < -2.5 and angle.max() > 2.5  # the full circle is drawn
    u, v = 0.7 * pixel_centres(24)[None, :], 0.7 * pixel_centres(24)[:, None]
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    torch.testing.assert_close(views[:, 0].double(), cos * u - sin * v, atol=1e-5, rtol=0)
    torch.testing.assert_close(views[:, 1].double(), sin * u + cos * v, atol=1e-5, rtol=0)


def test_center_crop_equals_the_central_region_resized():
    tiles = random_tiles(size=196)
    views, _ = Augmenter(compose(CenterCrop(fraction=0.5)), 96)(tiles, seeded())
    expected = F.interpolate(tiles[..., 49:147, 49:147], size=96, mode="bilinear", align_corners=False)
    torch.testing.assert_close(views, expected, atol=1e-4, rtol=0)
    native, _ = Augmenter(compose(CenterCrop(fraction=0.5)), 98)(tiles, seeded())
    torch.testing.assert_close(native, tiles[..., 49:147, 49:147], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("horizontal", "vertical", "dims"), [(True, False, (-1,)), (False, True, (-2,)), (True, True, (-2, -1))]
)
def test_flips_are_exact(horizontal, vertical, dims):
    tiles = random_tiles(size=24)
    views, _ = Augmenter(compose(Flip(p=1.0, horizontal=horizontal, vertical=vertical)), 24)(tiles, seeded())
    torch.testing.assert_close(views, torch.flip(tiles, dims), atol=1e-5, rtol=0)


def test_flip_params_say_which_flip_each_sample_got():
    augmenter = Augmenter(compose(Flip(p=0.5)), 16)
    tiles = random_tiles(batch=32, size=16)
    views, params = augmenter(tiles, seeded())
    assert 0 < params[:, 0].sum() < 32 and 0 < params[:, 1].sum() < 32
    for view, tile, (horizontal, vertical) in zip(views, tiles, params.tolist(), strict=True):
        dims = [d for d, flag in ((-1, horizontal), (-2, vertical)) if flag]
        expected = torch.flip(tile, dims) if dims else tile
        torch.testing.assert_close(view, expected, atol=1e-5, rtol=0)


def test_rotation_inside_a_small_centre_crop_leaves_no_empty_corners():
    ones = torch.ones(64, 1, 96, 96)
    inside, _ = Augmenter(compose(Rotation(), CenterCrop(fraction=1 / math.sqrt(2))), 48)(ones, seeded())
    assert inside.min() > 0.999
    whole, _ = Augmenter(compose(Rotation()), 48)(ones, seeded())
    assert whole.min() == 0  # the same rotation of the whole tile does show empty corners


def test_random_crop_params_give_the_sampled_region():
    """Bilinear sampling of the coordinate channels is exact: each view must show the box the params give."""
    augmenter = Augmenter(compose(RandomCrop(scale=(0.2, 1.0), ratio=(0.5, 2.0))), 16)
    views, params = augmenter(coordinate_tiles(64, 64), seeded())
    _, width, height, center_x, center_y = (params[:, i, None, None].double() for i in range(5))
    area, ratio = (width * height).flatten(), (width / height).flatten()
    assert (
        area.min() >= 0.2 - 1e-6 and area.max() <= 1 + 1e-6 and ratio.min() >= 0.5 - 1e-6 and ratio.max() <= 2
    )
    assert ((center_x.abs() + width) <= 1 + 1e-6).all() and ((center_y.abs() + height) <= 1 + 1e-6).all()
    expected_x = center_x + width * pixel_centres(16)[None, None, :]
    expected_y = center_y + height * pixel_centres(16)[None, :, None]
    inside = (expected_x.abs() < 1 - 1 / 64) & (expected_y.abs() < 1 - 1 / 64)  # beyond: half zero padding
    torch.testing.assert_close(
        views[:, 0].double()[inside], expected_x.expand_as(inside)[inside], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        views[:, 1].double()[inside], expected_y.expand_as(inside)[inside], atol=1e-5, rtol=0
    )


def test_affine_translation_and_zoom_follow_the_params():
    augmenter = Augmenter(compose(Affine(p=1.0, translate=0.1, scale=(0.8, 1.25), shear=0.0)), 32)
    views, params = augmenter(coordinate_tiles(16, 32), seeded())
    _, shift_x, _, scale, shear_x, _ = params.double().unbind(1)
    assert (
        shift_x.abs().max() <= 0.1 and shear_x.abs().max() == 0 and 0.8 <= scale.min() <= scale.max() <= 1.25
    )
    expected_x = (pixel_centres(32)[None, :] - 2 * shift_x[:, None]) / scale[
        :, None
    ]  # content moved right by shift
    inside = expected_x.abs() < 1 - 1 / 32
    torch.testing.assert_close(views[:, 0, 16].double()[inside], expected_x[inside], atol=1e-5, rtol=0)


def test_transforms_compose_in_list_order():
    """Crop, then mirror the crop: the view shows the crop's own points mirrored, ``cx - w * u``
    (mirroring the tile first, then cropping, would show ``-(cx + w * u)``)."""
    augmenter = Augmenter(compose(RandomCrop(scale=(0.1, 0.3)), Flip(p=1.0, vertical=False)), 16)
    views, params = augmenter(coordinate_tiles(16, 64), seeded())
    center_x, width = params[:, 3, None].double(), params[:, 1, None].double()
    assert center_x.abs().max() > 0.3
    torch.testing.assert_close(
        views[:, 0, 8].double(), center_x - width * pixel_centres(16)[None, :], atol=1e-5, rtol=0
    )


def test_morphology_keeps_the_cell_at_the_centre_and_random_crops_move_it():
    tiles = central_blob(batch=32, size=96)
    centred = compose(*(t for t in load_composition("morphology").transforms if t.kind != "affine"))
    morphology, _ = Augmenter(centred, 48)(tiles, seeded())
    assert (centroid(morphology) - 23.5).abs().max() < 0.5
    shifted, _ = Augmenter(load_composition("morphology"), 48)(tiles, seeded())  # its affine shifts <= 5 %
    assert (centroid(shifted) - 23.5).abs().max() < 0.05 * 48 * 2 / 0.707 + 0.5
    for moving in (compose(RandomCrop(scale=(0.2, 0.6))), load_composition("context")):
        cropped, _ = Augmenter(moving, 48)(tiles, seeded())
        assert ((centroid(cropped) - 23.5).abs().amax(dim=1) > 3).float().mean() > 0.5


# --- pixel-level transforms ---------------------------------------------------------------------------------


def test_intensity_jitter_is_drawn_independently_per_channel():
    flat = torch.full((512, 3, 8, 8), 0.5)
    views, _ = Augmenter(compose(Intensity(p=1.0, per_channel=True)), 8)(flat, seeded())
    levels = views.mean(dim=(2, 3))
    assert (levels[:, 0] != levels[:, 1]).all()
    correlation = torch.corrcoef(levels.T)
    assert correlation[0, 1].abs() < 0.15 and correlation[0, 2].abs() < 0.15
    shared, _ = Augmenter(compose(Intensity(p=1.0, per_channel=False)), 8)(flat, seeded())
    assert torch.equal(shared[:, 0], shared[:, 1]) and not torch.equal(shared[0], shared[1])


def test_intensity_params_reproduce_the_jitter_without_nan_below_zero():
    augmenter = Augmenter(
        compose(Intensity(p=1.0, brightness=0.2, contrast=0.5, gamma=(0.5, 2.0), per_channel=False)), 4
    )
    x = torch.tensor([-0.3, 0.0, 0.25, 1.0]).view(4, 1, 1, 1).expand(4, 1, 4, 4).contiguous()
    views, params = augmenter(x, seeded())
    _, brightness, contrast, gamma = params.unbind(1)
    value = x[:, 0, 0, 0]
    shaped = torch.where(value > 0, value.clamp(min=0) ** gamma, value)
    torch.testing.assert_close(views[:, 0, 0, 0], shaped * contrast + brightness, atol=1e-6, rtol=0)
    assert torch.isfinite(views).all()


def test_blur_uses_each_samples_sigma():
    from kornia.filters import gaussian_blur2d

    augmenter = Augmenter(compose(Blur(p=0.5, sigma=(0.5, 2.0))), 33)
    impulse = torch.zeros(8, 1, 33, 33)
    impulse[:, :, 16, 16] = 1
    views, params = augmenter(impulse, seeded())
    applied, sigma = params.unbind(1)
    assert 0 < applied.sum() < 8 and torch.equal(sigma == 0, applied == 0)
    for view, tile, s in zip(views, impulse, sigma.tolist(), strict=True):
        expected = gaussian_blur2d(tile[None], 13, (s, s))[0] if s > 0 else tile
        torch.testing.assert_close(view, expected, atol=1e-6, rtol=0)


def test_erasing_fills_the_box_the_params_describe():
    augmenter = Augmenter(compose(Erasing(p=1.0, scale=(0.05, 0.3), value=-1.0)), 64)
    views, params = augmenter(torch.ones(16, 2, 64, 64), seeded())
    erased = (views == -1).all(dim=1).float().mean(dim=(1, 2))
    _, width, height, _, _ = params.unbind(1)
    torch.testing.assert_close(erased, width * height, atol=0.03, rtol=0)
    assert ((views == -1) | (views == 1)).all()


# --- evaluation view and preview ----------------------------------------------------------------------------


def test_eval_view_is_the_deterministic_centre_crop_and_resize():
    tiles = random_tiles(size=196)
    view = eval_view(load_composition("morphology-jitter"), 96)  # a centre crop of 0.5
    expected = F.interpolate(tiles[..., 49:147, 49:147], size=96, mode="bilinear", align_corners=False)
    torch.testing.assert_close(view(tiles), expected, atol=1e-4, rtol=0)
    assert torch.equal(view(tiles), view(tiles))
    whole = eval_view(load_composition("context"), 96)(tiles)
    torch.testing.assert_close(
        whole, F.interpolate(tiles, size=96, mode="bilinear", align_corners=False), atol=1e-4, rtol=0
    )


def test_eval_view_leaves_out_centre_crops_drawn_less_than_half_the_time():
    tiles = random_tiles(size=32)
    rare_crop = eval_view(compose(CenterCrop(fraction=0.5, p=0.3), Rotation()), 32)(tiles)
    torch.testing.assert_close(rare_crop, tiles, atol=1e-5, rtol=0)


def test_preview_views_are_reproducible_numpy_views():
    tile = np.random.default_rng(0).random((2, 40, 40), dtype=np.float32)
    first = preview_views(tile, load_composition("morphology"), n=6, seed=3, out_size=20)
    assert first.shape == (6, 2, 20, 20) and first.dtype == np.float32
    np.testing.assert_array_equal(first, preview_views(tile, load_composition("morphology"), 6, 3, 20))
    assert not np.array_equal(first, preview_views(tile, load_composition("morphology"), 6, 4, 20))
    assert not np.array_equal(first[0], first[1])
    with pytest.raises(InputError, match=r"\(C, H, W\)"):
        preview_views(tile[0], load_composition("morphology"), 6, 3, 20)


# --- accelerator (skipped without CUDA) --------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_batches_stay_on_the_gpu_with_no_host_sync():
    augmenter = Augmenter(compose(*EVERY_KIND), 32)
    tiles = torch.rand(8, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    augmenter(tiles, torch.Generator(device="cuda").manual_seed(0))  # warm-up: lazy initialisation may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        views, params = augmenter(tiles, torch.Generator(device="cuda").manual_seed(0))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert views.device == tiles.device and params.device == tiles.device
    again, _ = augmenter(tiles, torch.Generator(device="cuda").manual_seed(0))
    assert torch.equal(views, again) and torch.isfinite(views).all()
