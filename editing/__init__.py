"""Weight-space editing of implicit neural representations (INRs).

The data side of the editing application: batched SIREN fitting / rendering
(:mod:`editing.inr`), image-space edit definitions (:mod:`editing.edits`) and the cached
"digits-INR" benchmark dataset (:mod:`editing.data`, built by ``python -m editing.build_inrs``).
"""

# The GMN editor (``load_editor``) is added here by the editor module; keep this package
# importable without it.

from editing.data import DigitsINRConfig, digits_images, load_digits_inrs
from editing.edits import EDITS
from editing.inr import SIREN, fit_inrs, load_siren, make_coords, psnr, render

__all__ = [
    "EDITS",
    "SIREN",
    "DigitsINRConfig",
    "digits_images",
    "fit_inrs",
    "load_digits_inrs",
    "load_siren",
    "make_coords",
    "psnr",
    "render",
]
