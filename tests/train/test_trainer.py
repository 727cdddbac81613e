import threading

import numpy as np
import pandas as pd
import pytest
import torch

from phenossl.errors import Cancelled, CollapseError, DeviceOutOfMemoryError, DivergedError
from phenossl.train import EpochDone, StepProgress, iter_training, train
from phenossl.train.checkpoint import load_checkpoint


def test_training_reports_progress_and_writes_checkpoint_and_history(tiny_store, tiny_config, tmp_path):
    events = []
    result = train(tiny_store, tiny_config(weight_a=0.5), tmp_path / "run", progress=events.append)
    steps = [e for e in events if isinstance(e, StepProgress)]
    epochs = [e for e in events if isinstance(e, EpochDone)]
    assert len(steps) == 2 * 3 and len(epochs) == 2  # 48 cells / 16 per batch = 3 steps per epoch
    assert set(steps[0].branch_losses) == {"a", "b"}
    assert all(np.isfinite(s.loss) and s.images_per_s > 0 for s in steps)
    assert steps[-1].global_step == steps[-1].total_steps == 6
    state = load_checkpoint(result.checkpoint)
    assert state["epoch"] == 1 and state["train_config"]["weight_a"] == 0.5
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history["global_step"]) == [1, 2, 3, 4, 5, 6]
    assert {"loss_a", "loss_b"} <= set(history.columns)


def test_single_composition_weight_trains_one_branch(tiny_store, tiny_config, tmp_path):
    events = []
    train(tiny_store, tiny_config(weight_a=1.0, epochs=1), tmp_path / "run", progress=events.append)
    assert set(events[0].branch_losses) == {"a"}


def test_resume_continues_exactly_where_it_stopped(tiny_store, tiny_config, tmp_path):
    config = tiny_config(method="mocov2", weight_a=0.5, epochs=2)
    straight = train(tiny_store, config, tmp_path / "straight")

    cancel = threading.Event()
    with pytest.raises(Cancelled):
        for event in iter_training(tiny_store, config, tmp_path / "resumed", cancel=cancel):
            if isinstance(event, EpochDone):
                cancel.set()  # stop right after the first epoch's checkpoint
    resumed = train(tiny_store, config, tmp_path / "resumed", resume=True)
    a = load_checkpoint(straight.checkpoint)["model"]
    b = load_checkpoint(resumed.checkpoint)["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=f"{key} differs after resume")


def test_cancel_stops_within_one_step_and_keeps_the_checkpoint(tiny_store, tiny_config, tmp_path):
    cancel = threading.Event()
    events = iter_training(tiny_store, tiny_config(epochs=3), tmp_path / "run", cancel=cancel)
    seen = []
    with pytest.raises(Cancelled, match="cancelled at epoch 2, step 2.*epoch 1"):
        for event in events:
            seen.append(event)
            if isinstance(event, StepProgress) and event.epoch == 1 and event.step == 1:
                cancel.set()
    assert isinstance(seen[-1], StepProgress) and seen[-1].global_step == 4  # no step ran after the cancel
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 0


def test_nan_loss_stops_with_a_clear_message(tiny_store, tiny_config, tmp_path):
    config = tiny_config(optimizer="sgd", lr=1e12, epochs=3)
    with pytest.raises(DivergedError, match=r"diverged.*lower learning rate \(now 1e\+12\)"):
        train(tiny_store, config, tmp_path / "run")


def test_collapsed_representation_stops_with_a_clear_message(tiny_store, tiny_config, tmp_path):
    # invariance-only VICReg under heavy weight decay really collapses: every cell maps to one vector
    config = tiny_config(
        method="vicreg",
        method_params={"vicreg": {"var_coeff": 0.0, "cov_coeff": 0.0}},
        lr=0.05,
        weight_decay=19.0,
        epochs=3,
    )
    with pytest.raises(CollapseError, match="collapsed at epoch"):
        train(tiny_store, config, tmp_path / "run")


def test_out_of_memory_gives_advice_and_frees_the_run(tiny_store, tiny_config, tmp_path, monkeypatch):
    from phenossl.train import trainer

    real_build = trainer.build_model

    def build_that_runs_out_of_memory(*args, **kwargs):
        model, augmenters = real_build(*args, **kwargs)

        def forward(*_a, **_k):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        model.forward = forward
        return model, augmenters

    monkeypatch.setattr(trainer, "build_model", build_that_runs_out_of_memory)
    with pytest.raises(DeviceOutOfMemoryError, match="batch size 16.*Try batch size 8"):
        train(tiny_store, tiny_config(), tmp_path / "run")


def test_starting_from_a_previous_run_copies_its_encoder(tiny_store, tiny_config, tmp_path):
    from phenossl.methods.build import build_model
    from phenossl.train.checkpoint import encoder_state_of

    first = train(tiny_store, tiny_config(epochs=1), tmp_path / "first")
    model, _ = build_model(tiny_config(composition_a="context"), in_channels=2, num_samples=48,
                           encoder_state=encoder_state_of(first.checkpoint))
    saved = load_checkpoint(first.checkpoint)["model"]
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, saved[f"encoder.{key}"])


def test_diverging_mid_run_keeps_the_last_good_checkpoint(tiny_store, tiny_config, tmp_path, monkeypatch):
    from phenossl.train import trainer

    real_build = trainer.build_model
    steps_per_epoch = 3  # 48 cells / 16

    def build_that_diverges_in_epoch_two(*args, **kwargs):
        model, augmenters = real_build(*args, **kwargs)
        forward, calls = model.forward, []

        def diverging_forward(*a, **k):
            calls.append(1)
            losses = forward(*a, **k)
            return {name: loss * float("nan") for name, loss in losses.items()} if len(calls) > steps_per_epoch \
                else losses

        model.forward = diverging_forward
        return model, augmenters

    monkeypatch.setattr(trainer, "build_model", build_that_diverges_in_epoch_two)
    with pytest.raises(DivergedError, match=r"epoch 2, step 1.*checkpoint \(epoch 1\) is kept"):
        train(tiny_store, tiny_config(epochs=3), tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_out_of_memory_while_setting_up_gives_the_same_advice(tiny_store, tiny_config, tmp_path, monkeypatch):
    from phenossl.train import trainer

    class BatchesThatDoNotFit:
        def __init__(self, *args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(trainer, "TileBatches", BatchesThatDoNotFit)
    with pytest.raises(DeviceOutOfMemoryError, match="batch size 16.*No checkpoint had been saved yet.*batch size 8"):
        train(tiny_store, tiny_config(), tmp_path / "run")


def test_resuming_with_another_model_is_a_clear_error(tiny_store, tiny_config, tmp_path):
    from phenossl.errors import InputError

    train(tiny_store, tiny_config(epochs=1), tmp_path / "run")
    with pytest.raises(InputError, match=r"Cannot resume .*trained with another model \(method=simclr"):
        train(tiny_store, tiny_config(method="vicreg", epochs=2), tmp_path / "run", resume=True)


def test_cassle_trains_a_projector_conditioned_on_the_augmentation_parameters(tiny_store, tiny_config, tmp_path):
    from phenossl.embed import embed_store, load_trained_model
    from phenossl.models.heads import ConditionedProjector

    config = tiny_config(method="mocov2", cassle=True, weight_a=0.5, epochs=1)
    result = train(tiny_store, config, tmp_path / "run")
    model, saved = load_trained_model(result.checkpoint)
    assert saved.cassle and model.condition_dim is not None
    projectors = [m for m in model.modules() if isinstance(m, ConditionedProjector)]
    assert len(projectors) >= 2  # one per composition (plus MoCo's momentum copies)
    embeddings = embed_store(tiny_store, result.checkpoint, tmp_path / "run" / "embeddings.npy")
    assert embeddings.shape == (48, model.feature_dim) and np.isfinite(embeddings).all()


def test_the_device_cache_is_the_store_copied_in_chunks_without_warnings(tiny_store):
    import warnings

    from phenossl.train.loader import TileBatches

    batches = TileBatches(tiny_store.tiles, 16, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a read-only memmap wrapped as a tensor warns
        cache = batches._copy_to_device(chunk_bytes=5 * tiny_store.tiles[0].nbytes)  # 10 chunks of 5 tiles
    np.testing.assert_array_equal(cache.numpy(), np.asarray(tiny_store.tiles))
