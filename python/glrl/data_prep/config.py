"""The settings of a patch-set build, their defaults (the DRRN/GLRL setup) and their record in the manifest.

Why a frozen dataclass: the manifest stores ``BuildConfig.to_dict()``; a later build with an equal dict and
equal source images is a no-op, so every setting that changes the output must be a field here and nothing
else may change the output.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

from glrl.errors import DataError

# SRCNN's layout: 33x33 inputs, labels the central 21x21 (what a 9-1-5 net without padding outputs).
LAYOUTS = ("vdsr", "srcnn")
SCALE_SETS: Dict[str, Tuple[int, ...]] = {"2": (2,), "3": (3,), "4": (4,), "234": (2, 3, 4)}
VDSR_DOWNSCALES = (0.9, 0.8, 0.7, 0.6)


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Everything that decides the content of a patch set."""

    scales: Tuple[int, ...] = (3,)
    train_sets: Tuple[str, ...] = ("T91", "BSD200")
    val_set: str = "Set5"  # "" for none
    layout: str = "vdsr"
    patch_size: int = 31  # input patch side
    label_size: int = 31  # label patch side (centred in the input patch)
    stride: int = 21
    augment: bool = True  # the 8 rotations/flips of every image
    downscales: Tuple[float, ...] = ()  # extra down-scaled copies of each image (VDSR: 0.9, 0.8, 0.7, 0.6)
    seed: int = 0
    shuffle: bool = True
    patches_per_file: int = 16384

    def __post_init__(self) -> None:
        problems = []
        if not self.scales or any(s not in (2, 3, 4) for s in self.scales):
            problems.append(f"scales must be among 2, 3, 4, not {self.scales}")
        if len(set(self.scales)) != len(self.scales):
            problems.append(f"scales repeat: {self.scales}")
        if self.layout not in LAYOUTS:
            problems.append(f"layout must be one of {LAYOUTS}, not {self.layout!r}")
        if self.patch_size < 1 or self.label_size < 1 or self.label_size > self.patch_size:
            problems.append(f"need 1 <= label size ({self.label_size}) <= patch size ({self.patch_size})")
        if (self.patch_size - self.label_size) % 2:
            problems.append("patch size minus label size must be even (the label is centred)")
        if self.stride < 1:
            problems.append(f"stride must be positive, not {self.stride}")
        if any(not 0 < f < 1 for f in self.downscales):
            problems.append(f"down-scale factors must lie in (0, 1), not {self.downscales}")
        if self.patches_per_file < 1:
            problems.append(f"patches per file must be positive, not {self.patches_per_file}")
        if not self.train_sets:
            problems.append("no training sets named")
        if not 0 <= self.seed < 2**32:  # what numpy's RandomState, which shuffles the patches, takes
            problems.append(f"the seed must lie in 0 .. 2**32 - 1, not {self.seed}")
        if problems:
            raise DataError("bad patch-set settings: " + "; ".join(problems),
                            hint="see `glrl data build --help`")

    @property
    def transforms(self) -> Tuple[int, ...]:
        """Indices of the dihedral transforms applied (see :func:`glrl.data_prep.patches.dihedral`)."""
        return tuple(range(8)) if self.augment else (0,)

    @property
    def image_scales(self) -> Tuple[float, ...]:
        """The full-size image (1.0) followed by the extra down-scaled copies."""
        return (1.0,) + tuple(self.downscales)

    def to_dict(self) -> Dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def for_layout(cls, layout: str, **overrides: Any) -> "BuildConfig":
        """Defaults of a layout (vdsr: 31/31 stride 21; srcnn: 33/21 stride 14) with ``overrides``
        (``None`` values mean "the layout's default")."""
        base: Dict[str, Any] = {"vdsr": dict(patch_size=31, label_size=31, stride=21),
                                "srcnn": dict(patch_size=33, label_size=21, stride=14)}.get(layout, {})
        base["layout"] = layout
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


def scale_name(scales: Tuple[int, ...], layout: str = "vdsr") -> str:
    """``(3,)`` -> ``x3``, ``(2, 3, 4)`` -> ``x234``, SRCNN's layout ``x3-srcnn``: the default folder name."""
    name = "x" + "".join(str(s) for s in scales)
    return name if layout == "vdsr" else f"{name}-{layout}"


def parse_scales(text: str) -> Tuple[int, ...]:
    """``"3"`` -> ``(3,)``; ``"234"`` or ``"2,3,4"`` -> ``(2, 3, 4)``."""
    key = text.replace(",", "").strip()
    if key not in SCALE_SETS:
        raise DataError(f"unknown scale {text!r}", hint="use 2, 3, 4 or 234 (the multi-scale set)")
    return SCALE_SETS[key]
