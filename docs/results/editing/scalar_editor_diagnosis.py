"""Diagnosis of the invert plateau with a 12-scalar editor (no metanetwork).

Every tensor t of the SIREN gets a learned scale a_t and shift c_t:
    theta'_t = theta_t + u_t * (a_t * theta_t / s_t + c_t)
which contains invert's exact solution (a = -2 s/u on the last weight and bias, c = 1/u on
the last bias). Trained like the editors (Adam, lr 0.01, cosine, 300 steps, batch 32, pixel MSE
against 1 - image) on the first 400 digits-INR training INRs, with the output scale u = s
(the old editor) or u = preact_scales (the new default). Run:

    .venv/bin/python docs/results/editing/scalar_editor_diagnosis.py
"""

import math

import torch

from editing.data import load_digits_inrs
from editing.editor import preact_scales
from editing.edits import EDITS
from editing.inr import DEFAULT_W0, DEFAULT_WIDTHS, render

torch.set_num_threads(1)
params, images = load_digits_inrs("train", 400, progress=False)
target = EDITS["invert"](images)
names = list(params)
s = torch.stack([params[k].std() for k in names])


def edited(p, u, a, c):
    return {k: p[k] + u[i] * (a[i] * p[k] / s[i] + c[i]) for i, k in enumerate(names)}


for label, u in [("u = s (std)", s), ("u = preact", preact_scales(DEFAULT_WIDTHS, DEFAULT_W0))]:
    a = torch.zeros(len(names), requires_grad=True)
    c = torch.zeros(len(names), requires_grad=True)
    opt = torch.optim.Adam([a, c], lr=0.01)
    gen = torch.Generator().manual_seed(0)
    for step in range(300):
        opt.param_groups[0]["lr"] = 0.01 * 0.5 * (1 + math.cos(math.pi * step / 300))
        idx = torch.randint(400, (32,), generator=gen)
        batch = {k: v[idx] for k, v in params.items()}
        loss = (render(edited(batch, u, a, c), (28, 28)) - target[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mse = (render(edited(params, u, a, c), (28, 28)) - target).pow(2).mean()
        rel = (u * a / s).tolist()  # relative scale change of every tensor
    print(f"{label:14s} train MSE {float(mse):.5f}   relative scale change per tensor "
          f"(w0 b0 w1 b1 w2 b2): {[round(x, 2) for x in rel]}   (exact: 0 0 0 0 -2 -2)")
