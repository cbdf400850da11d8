"""Fit and cache the digits-INR dataset: ``python -m editing.build_inrs [--help]``.

Fits one SIREN per digit image (see :mod:`editing.data` for the protocol) and stores the
batched parameters as safetensors plus a JSON sidecar (config, fit time, PSNRs) under the
cache directory, named by a hash of the config. Re-running with the same config only
reports the existing file (``--overwrite`` refits and replaces it). A ``--cache-dir`` that
holds files other than digits-INR caches is refused unless ``--overwrite`` (they are left
alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import cli
from common.cli import nonnegative, option, positive
from common.errors import ConfigError
from common.persistence import read_json, refuse_foreign
from editing.data import SPLITS, DigitsINRConfig, build_digits_inrs, cache_dir, cache_paths
from editing.train import torch_device

__all__ = ["BuildConfig", "build", "main"]

_D = DigitsINRConfig()


@dataclass
class BuildConfig:
    """Options of ``python -m editing.build_inrs``."""

    steps: int = option(_D.steps, "Adam steps per INR", check=positive)
    lr: float = option(_D.lr, "Adam learning rate", check=positive)
    seed: int = option(_D.seed, "init seed (per image index)", check=nonnegative)
    size: int = option(_D.size, "image side length in pixels", check=positive)
    w0: float = option(_D.w0, "SIREN frequency factor", check=positive)
    widths: list[int] = option(list(_D.widths), "SIREN layer widths (first 2, last 1)",
                               check=positive)
    split: str = option(_D.split, "which images to fit ('all' = the full dataset, what "
                        "load_digits_inrs prefers)", choices=SPLITS)
    limit: int = option(0, "fit only the first LIMIT images of --split (0: all)",
                        check=nonnegative)
    moved: int = option(0, "rotate and shift every image before fitting, by seed MOVED "
                        "(0: the benchmark's upright digits; editing.train --moved-copies k "
                        "uses --split train --limit 1400 --moved 1..k)", check=nonnegative)
    chunk_size: int = option(256, "INRs fitted together (memory / speed only)", check=positive)
    device: str = option("cpu", "torch device for fitting, e.g. cpu or cuda", check=torch_device)
    threads: int = option(0, "CPU intra-op threads while fitting (0: torch's default); 1 is "
                          "fastest on a CPU shared with other jobs", check=nonnegative)
    cache_dir: str = option("", "cache directory (default: $GMN_CACHE or "
                            f"~/.cache/graph_metanetworks, currently {cache_dir()})")
    overwrite: bool = option(False, "refit even if this config is cached (replacing its files), "
                             "and accept a --cache-dir holding other files")
    progress: bool = option(True, "show a progress bar")

    def check(self) -> None:
        if len(self.widths) < 2 or self.widths[0] != 2 or self.widths[-1] != 1:
            raise ConfigError(f"--widths must start with 2 and end with 1 (coordinates in, "
                              f"intensity out), got {self.widths}")

    def inr_config(self) -> DigitsINRConfig:
        return DigitsINRConfig(steps=self.steps, lr=self.lr, seed=self.seed, size=self.size,
                               w0=self.w0, widths=tuple(self.widths), split=self.split,
                               limit=self.limit or None, moved=self.moved)


def _is_cache_file(rel: Path) -> bool:
    return len(rel.parts) == 1 and rel.name.lstrip(".").startswith("digits_inr_")


def build(cfg: BuildConfig) -> int:
    """Fit (or find) the cached INRs of ``cfg``; prints the cache path and a summary."""
    config, root = cfg.inr_config(), cfg.cache_dir or None
    if root is not None:
        refuse_foreign(root, _is_cache_file, overwrite=cfg.overwrite, option="--cache-dir")
    weights, info_path = cache_paths(config, root)
    if weights.exists() and not cfg.overwrite:
        print(f"cached: {weights}")
    build_digits_inrs(config, root=root, chunk_size=cfg.chunk_size, device=cfg.device,
                      progress=cfg.progress, force=cfg.overwrite,
                      num_threads=cfg.threads or None)
    if info_path.exists():
        info = read_json(info_path, what="digits-INR cache info")
        print(f"{info['config']['n_images']} INRs | fit {info['fit_seconds']:.1f}s | "
              f"mean PSNR {info['mean_psnr']:.2f} dB | {weights}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m editing.build_inrs``; returns the exit code (0)."""
    return cli.run(BuildConfig, build, argv, prog="python -m editing.build_inrs", doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
