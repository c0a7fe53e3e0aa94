"""Builders of small data files in every format the readers take (images are tiny solid-colour PNGs)."""
import pytest

from tests.data.builders import png_bytes, write_tar


@pytest.fixture
def png():
    return png_bytes


@pytest.fixture
def tar_writer():
    return write_tar
