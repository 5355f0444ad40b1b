"""Volumes and signals from files: ``.npy`` (NumPy, read without unpickling) and NIfTI (``.nii``,
``.nii.gz``; the optional ``nibabel`` reader: ``pip install 'gradcam[volume]'``).

Layouts (channels first, as the model takes them, without the batch dimension):
- ``.npy`` with 1 or 2 dimensions: a signal, (L,) or (C, L);
- ``.npy`` with 3 or 4 dimensions: a volume, (D, H, W) or (C, D, H, W);
- NIfTI: a volume (X, Y, Z) as stored (or (X, Y, Z, C), channels moved first), its affine kept so that
  the map is written back in the same space.
The values are given to the model as they are stored (float32): store them preprocessed as the model
expects. The shape is checked from the header before anything is read: at most ``MAX_ELEMENTS`` values.

Example:
    >>> item = read_array(Path("scan.nii.gz"))            # doctest: +SKIP
    >>> item.kind, tuple(item.values.shape)
    ('volume', (1, 182, 218, 182))
"""

from __future__ import annotations

import glob
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAX_ELEMENTS = 256 * 1024 * 1024  # 1 GB of float32
ARRAY_SUFFIXES = (".npy", ".nii", ".nii.gz")


class ArrayReadError(ValueError):
    """An array file that cannot be used; one line naming it."""


@dataclass(frozen=True)
class ArrayInput:
    """One volume or signal: ``values`` (C, *spatial) float32, ``kind`` ``"volume"`` or ``"signal"``, the
    file's own ``shape``, and for NIfTI its ``affine`` (4 x 4) and header (for writing the map back)."""

    values: torch.Tensor
    kind: str
    shape: tuple[int, ...]
    affine: np.ndarray | None = None
    header: Any = None

    @property
    def nifti(self) -> bool:
        return self.affine is not None


def is_array_file(path: str | Path) -> bool:
    return str(path).lower().endswith(ARRAY_SUFFIXES)


def array_dimensions(path: Path) -> int | None:
    """How many dimensions the array in ``path`` has, from its header only (None where unreadable):
    a ``.npy`` file's own, 3 for NIfTI."""
    if str(path).lower().endswith((".nii", ".nii.gz")):
        return 3
    try:
        return len(npy_header(path)[0])
    except ArrayReadError:
        return None


def find_arrays(inputs: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """Array files among ``inputs`` (files, folders searched recursively in sorted order, globs):
    ``(paths, roots)``, ``roots[i]`` being the folder ``paths[i]`` is named relative to in the outputs."""
    paths: list[Path] = []
    roots: list[Path] = []
    for item in inputs:
        location = Path(item)
        if location.is_dir():
            found = sorted(p for p in location.rglob("*") if p.is_file() and is_array_file(p))
            paths += found
            roots += [location] * len(found)
        elif is_array_file(item) and location.is_file():
            paths.append(location)
            roots.append(location.parent)
        elif glob.has_magic(item):
            for match in sorted(Path(m) for m in glob.glob(item, recursive=True)):
                if match.is_file() and is_array_file(match):
                    paths.append(match)
                    roots.append(match.parent)
    return paths, roots


def read_array(path: Path, max_elements: int = MAX_ELEMENTS) -> ArrayInput:
    """Read a volume or signal file (see the module's docstring); errors are one line naming the file."""
    name = str(path)
    if name.lower().endswith((".nii", ".nii.gz")):
        return _read_nifti(path, max_elements)
    shape, dtype = npy_header(path)
    if dtype.hasobject:
        raise ArrayReadError(f"{path}: an array of Python objects; object arrays are never unpickled, save numbers")
    _check(path, shape, dtype, max_elements)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ArrayReadError(f"{path}: not a readable .npy file ({str(error).splitlines()[0]})") from None
    values = torch.from_numpy(np.array(array, dtype=np.float32))  # a writable copy, never the mapped file
    if array.ndim in (1, 3):
        values = values[None]
    if array.ndim not in (1, 2, 3, 4):
        raise ArrayReadError(f"{path}: {array.ndim} dimensions; a signal has 1-2 (C, L), a volume 3-4 (C, D, H, W)")
    kind = "signal" if array.ndim <= 2 else "volume"
    return ArrayInput(values, kind, tuple(int(s) for s in array.shape))


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header, before any value is read."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(handle)
    except FileNotFoundError:
        raise ArrayReadError(f"{path}: no such file") from None
    except (ValueError, OSError, SyntaxError) as error:
        raise ArrayReadError(f"{path}: not a readable .npy file ({str(error).splitlines()[0]})") from None
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _read_nifti(path: Path, max_elements: int) -> ArrayInput:
    try:
        import nibabel
    except ImportError:
        raise ArrayReadError(f"{path}: NIfTI needs nibabel (pip install 'gradcam[volume]')") from None
    try:
        image: Any = nibabel.load(str(path))
    except FileNotFoundError:
        raise ArrayReadError(f"{path}: no such file") from None
    except Exception as error:  # nibabel raises several kinds for a damaged header
        raise ArrayReadError(f"{path}: not a readable NIfTI file ({str(error).splitlines()[0]})") from None
    shape = tuple(int(s) for s in image.shape)
    _check(path, shape, np.dtype(image.get_data_dtype()), max_elements)
    if len(shape) not in (3, 4):
        raise ArrayReadError(f"{path}: a NIfTI volume of {len(shape)} dimensions; expected (X, Y, Z) or (X, Y, Z, C)")
    try:
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:
        raise ArrayReadError(f"{path}: cannot read its values ({str(error).splitlines()[0]})") from None
    values = torch.from_numpy(np.ascontiguousarray(data))
    values = values[None] if values.dim() == 3 else values.permute(3, 0, 1, 2).contiguous()
    return ArrayInput(values, "volume", shape, np.asarray(image.affine), image.header)


def _check(path: Path, shape: tuple[int, ...], dtype: np.dtype, max_elements: int) -> None:
    if dtype.kind not in "biuf":
        raise ArrayReadError(f"{path}: values of type {dtype}; expected numbers")
    count = math.prod(shape)
    if count == 0:
        raise ArrayReadError(f"{path}: an empty array {tuple(shape)}")
    if count > max_elements:
        raise ArrayReadError(
            f"{path}: {count:,} values {tuple(shape)} is more than the {max_elements:,} allowed; crop or downsample "
            "it, or raise --max-megapixels (millions of values for volumes and signals)"
        )


def map_path(stem: Path, source: ArrayInput) -> Path:
    """Where :func:`write_map` writes the map of ``source``: ``STEM.nii.gz`` for NIfTI, else ``STEM.npy``."""
    return stem.with_name(stem.name + (".nii.gz" if source.nifti else ".npy"))


def write_map(map_values: np.ndarray, target: Path, source: ArrayInput) -> None:
    """The map (the input's spatial shape) at ``target`` (:func:`map_path`): NIfTI in the source's space
    (its affine), else ``.npy``; written atomically."""
    from .files import write_atomic

    if source.nifti:
        import nibabel

        image = nibabel.Nifti1Image(map_values.astype(np.float32), source.affine)
        write_atomic(target, lambda temporary: nibabel.save(image, str(temporary)), suffix=".nii.gz")
        return
    write_atomic(target, lambda temporary: np.save(temporary, map_values.astype(np.float32)), suffix=".npy")
