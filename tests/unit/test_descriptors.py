"""Descriptors are closed once: a second close of a number that another file took meanwhile would close
that file instead (it closed a zygote's control socket at shutdown, "Bad file descriptor")."""

from __future__ import annotations

import os
from pathlib import Path

from selfless.sandbox.scratch import Scratch


def test_a_scratch_image_closes_its_descriptor_once(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.write_bytes(b"")
    scratch = Scratch(image, "/dev/loop-none", os.open(image, os.O_RDONLY))
    number = scratch.fd
    scratch.close()  # given back
    reused = os.open(image, os.O_RDONLY)  # the lowest free number: the one just closed
    try:
        assert reused == number
        scratch.release()  # released later: must not close the file that took the number
        os.fstat(reused)  # raises OSError (EBADF) if it was closed
        assert not image.exists()
    finally:
        os.close(reused)
