"""Label schemes: the class names travel with the model (``config.id2label``).

Code that needs a particular part (hair, lips) looks it up *by name* through
:class:`LabelScheme`, never by a hard-coded id, so a model trained on another
scheme (LaPa, say) works as long as it uses the same part names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

# CelebAMask-HQ class ids, in the official order (id == index).
CELEBAMASK_HQ: tuple[str, ...] = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow",
    "l_ear", "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l",
    "neck", "cloth",
)

# LaPa's 11 classes, renamed to the CelebAMask-HQ part names they share.
LAPA: tuple[str, ...] = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "u_lip",
    "mouth", "l_lip", "hair",
)

# "l_"/"r_" are the person's left and right (in CelebAMask-HQ l_eye mostly lies on the image's
# right half): a horizontal flip swaps them.
_MIRROR_PAIRS = (("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear"))

# Human-readable names for legends and reports.
DISPLAY_NAMES = {
    "eye_g": "eyeglasses", "l_eye": "left eye", "r_eye": "right eye",
    "l_brow": "left brow", "r_brow": "right brow", "l_ear": "left ear",
    "r_ear": "right ear", "mouth": "inner mouth", "u_lip": "upper lip",
    "l_lip": "lower lip", "ear_r": "earring", "neck_l": "necklace",
}

# The palette commonly used to render CelebAMask-HQ parsings, keyed by name so
# that schemes sharing part names share colours.
_PALETTE = {
    "background": (0, 0, 0), "skin": (204, 0, 0), "nose": (76, 153, 0),
    "eye_g": (204, 204, 0), "l_eye": (51, 51, 255), "r_eye": (204, 0, 204),
    "l_brow": (0, 255, 255), "r_brow": (255, 204, 204), "l_ear": (102, 51, 0),
    "r_ear": (255, 0, 0), "mouth": (102, 204, 0), "u_lip": (255, 255, 0),
    "l_lip": (0, 0, 153), "hair": (0, 0, 204), "hat": (255, 51, 153),
    "ear_r": (0, 204, 204), "neck_l": (0, 51, 0), "neck": (255, 153, 51),
    "cloth": (0, 204, 0),
}


@dataclass(frozen=True)
class LabelScheme:
    """An ordered tuple of class names; the index of a name is its class id."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"class names must be unique, got {self.names}")

    @classmethod
    def from_id2label(cls, id2label: Mapping[int | str, str]) -> LabelScheme:
        """Build from a model config's ``id2label`` (keys may be strings in JSON)."""
        by_id = {int(k): v for k, v in id2label.items()}
        if sorted(by_id) != list(range(len(by_id))):
            raise ValueError(f"id2label ids must be 0..N-1, got {sorted(by_id)}")
        return cls(tuple(by_id[i] for i in range(len(by_id))))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def id_of(self, name: str) -> int:
        """Class id of ``name``; a clear error lists the names the model knows."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"class {name!r} is not in this model's labels {list(self.names)}") from None

    def ids_of(self, names: Iterable[str]) -> list[int]:
        """Ids of the names that exist in this scheme (missing ones are skipped)."""
        return [self.names.index(n) for n in names if n in self.names]

    def display_name(self, class_id: int) -> str:
        name = self.names[class_id]
        return DISPLAY_NAMES.get(name, name)

    def mirror_pairs(self) -> list[tuple[int, int]]:
        """``(left_id, right_id)`` of each left/right part pair in this scheme."""
        return [(self.names.index(left), self.names.index(right)) for left, right in _MIRROR_PAIRS
                if left in self.names and right in self.names]

    def flip_permutation(self) -> np.ndarray:
        """``perm[id]`` is the id a pixel of class ``id`` takes after a horizontal flip."""
        perm = np.arange(len(self.names), dtype=np.uint8)
        for li, ri in self.mirror_pairs():
            perm[li], perm[ri] = ri, li
        return perm

    def palette(self) -> np.ndarray:
        """``(N, 3)`` uint8 colours; names outside the known palette get stable fallbacks."""
        rng = np.random.default_rng(0)
        fallback = rng.integers(0, 256, size=(len(self.names), 3))
        return np.array(
            [_PALETTE.get(n, tuple(fallback[i])) for i, n in enumerate(self.names)], dtype=np.uint8
        )


CELEBAMASK_HQ_SCHEME = LabelScheme(CELEBAMASK_HQ)
LAPA_SCHEME = LabelScheme(LAPA)
