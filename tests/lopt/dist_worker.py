"""torchrun entry point for the distributed tests: meta-training with a failure injected.

``torchrun ... tests/lopt/dist_worker.py {raise,nan} RANK STEP -- <meta_train flags>``: on
rank ``RANK``, the meta-gradient estimate of outer step ``STEP`` (1-based) raises, or returns
NaN gradients. Every other rank runs normally.
"""

import os
import sys

import torch

import lopt.estimators as est
import lopt.meta_train as mt

mode, bad_rank, bad_step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
flags = sys.argv[sys.argv.index("--") + 1:]
original = est.tbptt_estimate
calls = {"n": 0}
slots_per_rank = 1  # the tests run --tasks-per-step equal to the number of processes


def faulty(*args, **kwargs):
    calls["n"] += 1
    loss, grads, state = original(*args, **kwargs)
    if int(os.environ["RANK"]) == bad_rank and calls["n"] == bad_step * slots_per_rank:
        if mode == "raise":
            raise RuntimeError("injected failure")
        grads = {g: {k: torch.full_like(v, float("nan")) for k, v in d.items()}
                 for g, d in grads.items()}
    return loss, grads, state


est.tbptt_estimate = faulty
mt.main(flags)
