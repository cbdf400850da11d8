"""Fit and cache the digits-INR dataset: ``python -m editing.build_inrs [--help]``.

Fits one SIREN per digit image (see :mod:`editing.data` for the protocol) and stores the
batched parameters as safetensors plus a JSON sidecar (config, fit time, PSNRs) under the
cache directory, named by a hash of the config. Re-running with the same config only
reports the existing file (use ``--force`` to refit).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from editing.data import SPLITS, DigitsINRConfig, build_digits_inrs, cache_dir, cache_paths


def _widths(text: str) -> tuple[int, ...]:
    """Parse ``"2,32,32,1"`` into ``(2, 32, 32, 1)``."""
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"widths must be comma-separated ints: {text!r}") from err


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    d = DigitsINRConfig()
    p = argparse.ArgumentParser(
        prog="python -m editing.build_inrs",
        description="Fit one SIREN per 8x8 digit (upsampled) and cache the batched weights "
        "as safetensors + JSON under the cache directory (named by a hash of the config).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--steps", type=int, default=d.steps, help="Adam steps per INR")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=d.seed, help="init seed (per image index)")
    p.add_argument("--size", type=int, default=d.size, help="image side length in pixels")
    p.add_argument("--w0", type=float, default=d.w0, help="SIREN frequency factor")
    p.add_argument(
        "--widths",
        type=_widths,
        default=",".join(map(str, d.widths)),
        help="SIREN layer widths, comma-separated (first 2, last 1), e.g. 2,32,32,1",
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        default=d.split,
        help="which images to fit ('all' = the full dataset, what load_digits_inrs prefers)",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="fit only the first LIMIT images of --split"
    )
    p.add_argument(
        "--chunk-size", type=int, default=256, help="INRs fitted together (memory/speed only)"
    )
    p.add_argument("--device", default=None, help="torch device for fitting, e.g. cpu or cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU intra-op threads while fitting (None: torch's default); 1 is fastest on a "
        "CPU shared with other jobs",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help=f"cache directory; None means $GMN_CACHE or ~/.cache/graph_metanetworks "
        f"(currently {cache_dir()})",
    )
    p.add_argument("--force", action="store_true", help="refit even if a cached file exists")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; prints the cache path and the JSON summary. Returns the exit code."""
    args = build_parser().parse_args(argv)
    config = DigitsINRConfig(
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        size=args.size,
        w0=args.w0,
        widths=args.widths,
        split=args.split,
        limit=args.limit,
    )
    weights, info_path = cache_paths(config, args.cache_dir)
    if weights.exists() and not args.force:
        print(f"cached: {weights}")
    build_digits_inrs(
        config,
        root=args.cache_dir,
        chunk_size=args.chunk_size,
        device=args.device,
        progress=not args.no_progress,
        force=args.force,
        num_threads=args.threads,
    )
    if info_path.exists():
        info = json.loads(info_path.read_text())
        print(
            f"{info['config']['n_images']} INRs | fit {info['fit_seconds']:.1f}s | "
            f"mean PSNR {info['mean_psnr']:.2f} dB | {weights}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
