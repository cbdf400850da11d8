"""Weight-space editing of implicit neural representations (INRs).

The data side: batched SIREN fitting / rendering (:mod:`editing.inr`), image-space edit
definitions (:mod:`editing.edits`) and the cached "digits-INR" benchmark dataset
(:mod:`editing.data`, built by ``python -m editing.build_inrs``). The editor side: the
residual metanetwork editor (:mod:`editing.editor`, baselines in :mod:`editing.baselines`),
training (``python -m editing.train``), the results table (:mod:`editing.results`), the
shipped editors (:func:`load_editor`, :mod:`editing.shipped`) and ``python -m editing.demo``.
"""

from editing.data import DigitsINRConfig, digits_images, load_digits_inrs
from editing.editor import Editor, EditorConfig
from editing.edits import EDITS
from editing.exact_edits import invert_params
from editing.inr import SIREN, fit_inrs, load_siren, make_coords, psnr, render
from editing.shipped import available_editors, load_editor
from editing.symmetry import permute_hidden, random_hidden_permutations

__all__ = [
    "EDITS",
    "SIREN",
    "DigitsINRConfig",
    "Editor",
    "EditorConfig",
    "available_editors",
    "digits_images",
    "fit_inrs",
    "invert_params",
    "load_digits_inrs",
    "load_editor",
    "load_siren",
    "make_coords",
    "permute_hidden",
    "psnr",
    "random_hidden_permutations",
    "render",
]
