"""Memory checks up front: a batch that cannot fit is refused with the batch size that would."""

import pytest

import segrt.runtime.memory as memory
from segrt.errors import ImageError, SegrtError
from segrt.manifest import Manifest

M = Manifest(name="m", classes=["a", "b", "c"], mean=[0.5] * 3, std=[0.25] * 3, channels=3, size_multiple=8,
             input_size=[256, 256])


def test_batch_bytes_grow_with_the_batch_and_the_pixels():
    one = memory.batch_bytes(M, 1, 256, 256)
    assert one > 0 and memory.batch_bytes(M, 4, 256, 256) == 4 * one
    assert memory.batch_bytes(M, 1, 512, 512) >= 4 * one * 0.99
    assert memory.gb(1_500_000_000) == "1.5 GB"


def test_a_batch_that_does_not_fit_names_one_that_does(monkeypatch):
    monkeypatch.setattr(memory, "memory_budget", lambda: 10 * memory.batch_bytes(M, 1, 256, 256))
    memory.check_batch_memory(M, 8, 8, (256, 256))
    with pytest.raises(SegrtError, match=r"--batch-size 64 at 256x256 needs .*; use --batch-size 10 or less"):
        memory.check_batch_memory(M, 64, 64, (256, 256))
    memory.check_batch_memory(M, 64, 64, None)  # native sizes: checked per batch


def test_an_image_too_large_even_tiled_fails_alone(monkeypatch):
    monkeypatch.setattr(memory, "memory_budget", lambda: 1_000_000)
    memory.check_tiled_memory(M, "small.png", 100, 100, 64)
    with pytest.raises(ImageError, match="big.png: 20000x20000 needs"):
        memory.check_tiled_memory(M, "big.png", 20000, 20000, 512)


def test_unknown_memory_checks_nothing(monkeypatch):
    monkeypatch.setattr(memory, "memory_budget", lambda: None)
    memory.check_batch_memory(M, 10 ** 6, 10 ** 6, (4096, 4096))
