"""Small data files for the reader tests: tiny solid-colour PNGs and tars of named members."""
import io
import tarfile

from PIL import Image


def png_bytes(colour=(255, 0, 0), size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def write_tar(path, members):
    """A tar at ``path`` holding ``members`` (name -> bytes), in the given order."""
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
