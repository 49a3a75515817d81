"""Noise-level probe: where training draws its noise levels, where the samplers go, and the model's loss per level.

The bundled models diffuse the residual over bicubic, whose spread (sigma_data) is a fraction of a whole image's,
so the levels where signal and noise are comparable sit at the clean end of SR3's 2000-step schedule. This prints,
per bin of the training index t (t = 1 is the cleanest level): the share of training draws under SR3's uniform draw
and under the log-normal draw with a share kept uniform (`noise_sampling: "lognormal"` in a training config), how many levels the 5/20/50-step
quadratic grids visit there, sigma / sigma_data, and the model's error on all val images at one level per bin
(fixed seed): the training loss (L1 on the target) and the x0 error as a share of sigma_data^2 (1 = no better
than predicting a zero residual). `shared/TRAINING_NOTES.md`, "When samples get worse with more steps".

    python benchmarks/noise_level_probe.py sr3-face-8x --threads 1
    python benchmarks/noise_level_probe.py sr3-face-8x --model-path runs/face-s4/sr3-face-8x/export --out ...
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from sr3infer.hub.fetch import resolve_model_files
from sr3infer.images.io import write_atomically
from sr3infer.hub.manifest import sha256_file
from sr3infer.sampling.prediction import to_x0, training_target
from sr3infer.images.resample import bicubic
from sr3infer.train.data import make_lowres
from sr3infer.train.evaluate import load_eval_set
from sr3infer.train.noise_levels import NoiseLevelSampler
from sr3infer.models.weights import build_model, load_weights, read_config
from bench_data import require  # sibling modules: run this file as a script
from step_diagnostic import DOMAINS, HERE
BIN_EDGES = (1, 3, 10, 30, 60, 100, 200, 400, 700, 1000, 1500, 2001)  # t in [edge_i, edge_{i+1})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(DOMAINS))
    parser.add_argument("--model-path", help="probe this folder instead of the bundled model")
    parser.add_argument("--draws", type=int, default=200_000, help="training draws for the histograms")
    parser.add_argument("--uniform-fraction", type=float, default=0.25,
                        help="share of the log-normal draw kept SR3-uniform, as in the training config (default 0.25)")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="JSON (default benchmarks/results/<model>/noise_level_probe.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config_path, weights_path = resolve_model_files(args.model_path or args.model)
    config = read_config(weights_path, config_path)
    net = build_model(config, {k: v.float() for k, v in load_weights(weights_path).items()}).eval()
    data, protocol, _ = DOMAINS[args.model]
    require(data)
    hr = torch.stack(load_eval_set(data, protocol, config.out_size))
    cond = bicubic(make_lowres(hr, config.scale), tuple(hr.shape[-2:]))
    x0 = hr - cond if config.residual else hr
    sigma_data = float(x0.std())
    schedule = config.schedule
    gammas = schedule.gammas
    generator = torch.Generator().manual_seed(args.seed)
    samplers = {"sr3_uniform": NoiseLevelSampler("sr3", sigma_data=sigma_data),
                "lognormal": NoiseLevelSampler("lognormal", sigma_data=sigma_data, uniform_fraction=args.uniform_fraction)}
    draws = {name: _training_index(schedule, s.sample(schedule, args.draws, generator=generator)) for name, s in samplers.items()}
    grids = {n: _training_index(schedule, schedule.inference_grid(n, spacing="quadratic")[:-1].sqrt()) for n in (5, 20, 50)}
    rows = []
    for low, high in zip(BIN_EDGES[:-1], BIN_EDGES[1:]):
        t_mid = int(round(math.sqrt(low * (high - 1))))
        level = float(gammas[t_mid - 1].sqrt())
        sigma = math.sqrt((1 - level**2) / level**2)
        loss, x0_err = _loss_at(net, config, x0, cond, level, args.batch_size, args.seed + t_mid)
        rows.append({
            "t": [low, high - 1], "probe_t": t_mid, "sigma_over_sigma_data": sigma / sigma_data,
            **{f"share_{name}": float(((d >= low) & (d < high)).double().mean()) for name, d in draws.items()},
            **{f"grid_{n}_steps": int(((g >= low) & (g < high)).sum()) for n, g in grids.items()},
            "loss_l1": loss, "x0_mse_over_sigma_data2": x0_err / sigma_data**2,
        })
    result = {"what": __doc__.splitlines()[0], "model": args.model, "weights_sha256": sha256_file(weights_path),
              "data": str(data).replace(str(HERE.parent.parent), ".."), "images": int(hr.shape[0]),
              "sigma_data": sigma_data, "uniform_fraction": args.uniform_fraction, "prediction": config.prediction, "seed": args.seed, "bins": rows}
    out = args.out or HERE / "results" / args.model / "noise_level_probe.json"
    write_atomically(out, lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()), overwrite=True)
    print(f"{args.model}: {hr.shape[0]} val images, sigma_data {sigma_data:.4f} (residual: {config.residual})")
    print(f"| t | sigma/sigma_data | SR3 draws | log-normal + {args.uniform_fraction:.0%} SR3 draws | grid 5/20/50 | loss L1 | x0 MSE / sigma_data^2 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['t'][0]}-{r['t'][1]} | {r['sigma_over_sigma_data']:.3g} | {r['share_sr3_uniform']:.1%} | "
              f"{r['share_lognormal']:.1%} | {r['grid_5_steps']}/{r['grid_20_steps']}/{r['grid_50_steps']} | "
              f"{r['loss_l1']:.4f} | {r['x0_mse_over_sigma_data2']:.3f} |")
    print(f"wrote {out}")
    return 0


def _training_index(schedule, levels: torch.Tensor) -> torch.Tensor:
    """The training index t (1 = cleanest) whose level interval holds each noise level sqrt(gamma)."""
    edges = -schedule.noise_levels  # increasing: -1, -sqrt(gamma_1), ...
    return torch.searchsorted(edges, -levels.double().clamp(max=1.0), right=False).clamp(1, schedule.num_train_timesteps)


@torch.no_grad()
def _loss_at(net, config, x0, cond, level: float, batch_size: int, seed: int) -> tuple[float, float]:
    """Mean training loss (L1 on the prediction target) and x0 MSE over all images at one noise level."""
    generator = torch.Generator().manual_seed(seed)
    loss_sum = err_sum = 0.0
    for i in range(0, x0.shape[0], batch_size):
        clean, c = x0[i:i + batch_size], cond[i:i + batch_size]
        g = torch.full((clean.shape[0],), level)
        eps = torch.randn(clean.shape, generator=generator)
        noisy = level * clean + math.sqrt(1 - level**2) * eps
        out = net(torch.cat([c, noisy], 1), g)
        loss_sum += float((out - training_target(config.prediction, clean, eps, g)).abs().mean()) * clean.shape[0]
        err_sum += float(((to_x0(config.prediction, noisy, out, g) - clean) ** 2).mean()) * clean.shape[0]
    return loss_sum / x0.shape[0], err_sum / x0.shape[0]


if __name__ == "__main__":
    raise SystemExit(main())
