"""Embedding every cell: atomic, cancellable, and out-of-memory gives advice, never a half-written file."""

import threading

import numpy as np
import pytest
import torch

from phenossl.errors import Cancelled, DeviceOutOfMemoryError, OutputExistsError
from phenossl.train import train


@pytest.fixture
def trained(tiny_store, tiny_config, tmp_path):
    return train(tiny_store, tiny_config(epochs=1), tmp_path / "run").checkpoint


def test_out_of_memory_while_embedding_suggests_a_smaller_batch_and_writes_nothing(tiny_store, trained, tmp_path,
                                                                                   monkeypatch):
    from phenossl import embed

    def runs_out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(embed, "embed_tiles", runs_out_of_memory)
    out = tmp_path / "embeddings.npy"
    with pytest.raises(DeviceOutOfMemoryError, match=r"embedding 64 cells.*model is kept.*embed\.batch_size: 32"):
        embed.embed_store(tiny_store, trained, out, batch_size=64)
    assert not out.exists() and not list(tmp_path.glob(".embeddings.npy.*"))


def test_cancel_and_existing_files_leave_the_embeddings_as_they_were(tiny_store, trained, tmp_path):
    from phenossl.embed import embed_store

    out = tmp_path / "embeddings.npy"
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled, match="can be embedded again"):
        embed_store(tiny_store, trained, out, cancel=cancel)
    assert not out.exists()
    first = np.array(embed_store(tiny_store, trained, out))
    with pytest.raises(OutputExistsError):
        embed_store(tiny_store, trained, out, overwrite=False)
    np.testing.assert_array_equal(np.load(out), first)
