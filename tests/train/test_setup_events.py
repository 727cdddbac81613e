"""What training says about its first seconds (trainer.SetUp), for the CLI and napari alike."""

from __future__ import annotations

import torch

from phenossl.train import SETUP_PHASES, EpochDone, SetUp, StepProgress, iter_training, train
from phenossl.train.trainer import expected_events, precision_text


def test_set_up_events_come_first_in_order_and_only_when_asked(tiny_store, tiny_config, tmp_path):
    config = tiny_config(epochs=1)
    events = []
    train(tiny_store, config, tmp_path / "said", progress=events.append, set_up_events=True)
    kinds = [type(event) for event in events]
    assert kinds[: len(SETUP_PHASES) + 1] == [SetUp] * len(SETUP_PHASES) + [StepProgress]
    assert [event.phase for event in events if isinstance(event, SetUp)] == list(SETUP_PHASES)
    texts = {event.phase: event.text for event in events if isinstance(event, SetUp)}
    assert texts["model"] == f"building the model: {config.method} / {config.encoder} on cpu (float32)"
    assert texts["batches"].startswith(f"starting the batches: {tiny_store.n_cells} cells, ")
    assert len(events) == expected_events(tiny_store.n_cells, config, set_up_events=True)

    quiet = list(iter_training(tiny_store, config, tmp_path / "quiet"))  # the default: steps and epochs only
    assert {type(event) for event in quiet} == {StepProgress, EpochDone}
    assert len(quiet) == expected_events(tiny_store.n_cells, config)


def test_precision_says_what_the_steps_compute_in(tiny_config, monkeypatch):
    from phenossl.train import schedule

    assert precision_text(tiny_config(), torch.device("cpu")) == "float32"
    monkeypatch.setattr(schedule, "autocast_dtype", lambda device: torch.bfloat16)  # a CUDA device with bf16
    assert precision_text(tiny_config(amp=True), torch.device("cuda")) == "mixed precision bfloat16"
    assert precision_text(tiny_config(amp=False), torch.device("cuda")) == "float32"
