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
    from phenossl.train.trainer import _init_encoder_from, build_model

    first = train(tiny_store, tiny_config(epochs=1), tmp_path / "first")
    model, _ = build_model(tiny_config(composition_a="context"), in_channels=2, num_samples=48)
    _init_encoder_from(model, first.checkpoint)
    saved = load_checkpoint(first.checkpoint)["model"]
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, saved[f"encoder.{key}"])
