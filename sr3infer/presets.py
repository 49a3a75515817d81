"""The preset rule: which measured sampling recipe becomes a model's `fidelity` and which its `realism` preset.

`benchmarks/preset_search.py` measures every recipe of `grid()` on a validation set (PSNR, SSIM,
consistency, KID); `choose` applies the rule to those rows; `recipe_of` turns a chosen row into the
`Recipe` dict stored in the model's config.json. `scripts/bundle_model.py` and tests/test_bundled.py
use the same functions, so the stored presets are always the ones the rule picks.

Rule (issue 10), on all images of the val set, KID against the train+val high-res images of the domain:
    fidelity = the best PSNR among recipes with consistency <= 1e-5;
    realism  = the lowest KID among recipes with PSNR >= bicubic + 0.5 dB and consistency <= 1e-5
               (if no recipe reaches bicubic + 0.5 dB, the floor is bicubic itself; the row says which floor held).
"""

from __future__ import annotations

from typing import Any

__all__ = ["STEPS", "SAMPLER_VARIANTS", "SPACINGS", "CONSISTENCY", "MAX_CONSISTENCY_1E5", "PSNR_MARGIN_DB", "RULE",
           "grid", "key", "choose", "recipe_of"]

STEPS = (1, 2, 3, 5, 10, 20, 50)
SAMPLER_VARIANTS = (("ddim", 0.0), ("ddim", 0.5), ("ddim", 1.0), ("ancestral", 0.0), ("dpmpp_2m", 0.0))
SPACINGS = ("linear", "quadratic", "trailing")
CONSISTENCY = ("every", "final")  # "none" never reaches consistency <= 1e-5 (bicubic is at 45e-5 on faces)
MAX_CONSISTENCY_1E5 = 1.0
PSNR_MARGIN_DB = 0.5
RULE = (f"fidelity: best PSNR with consistency <= {MAX_CONSISTENCY_1E5:g}e-5; realism: lowest KID with PSNR >= "
        f"bicubic + {PSNR_MARGIN_DB} dB (bicubic + 0 dB if no recipe reaches that) and consistency <= "
        f"{MAX_CONSISTENCY_1E5:g}e-5; ties to fewer steps; all val images")


def grid(steps=STEPS, variants=SAMPLER_VARIANTS, spacings=SPACINGS, consistency=CONSISTENCY) -> list[dict[str, Any]]:
    """The recipes to measure in order: fewest steps first, `every` before `final` at each step count, so a
    budget-limited run covers a stated prefix of the grid. At one step every sampler, eta and spacing takes
    the same single step (pure noise -> the clean estimate), so it is listed once per consistency mode."""
    recipes = []
    for n in sorted(steps):
        for mode in consistency:
            if n == 1:
                recipes.append({"sampler": "ddim", "eta": 0.0, "num_steps": 1, "spacing": "linear", "consistency": mode})
                continue
            for sampler, eta in variants:
                for spacing in spacings:
                    recipes.append({"sampler": sampler, "eta": eta, "num_steps": n, "spacing": spacing,
                                    "consistency": mode})
    return recipes


def key(recipe: dict[str, Any]) -> str:
    """The row key of a recipe in the search JSON, e.g. "ddim|eta=1|10|quadratic|every"."""
    return f"{recipe['sampler']}|eta={recipe['eta']:g}|{recipe['num_steps']}|{recipe['spacing']}|{recipe['consistency']}"


def choose(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The two presets by the rule from the measured rows (`runs`: key -> row with "model" and "bicubic" scores);
    ties broken by fewer steps (faster), then the key (deterministic). {} when no row meets the consistency bound."""
    rows = [r for r in runs.values() if r["model"]["consistency_1e5"] <= MAX_CONSISTENCY_1E5 and "same_as" not in r]
    if not rows:
        return {}
    bicubic = rows[0]["bicubic"]["psnr"]
    chosen = {"fidelity": max(rows, key=lambda r: (round(r["model"]["psnr"], 3), -r["num_steps"], key(r)))}
    for margin in (PSNR_MARGIN_DB, 0.0):  # a model that never reaches bicubic + 0.5 dB: the floor drops to bicubic
        realistic = [r for r in rows if r["model"]["psnr"] >= bicubic + margin and "kid_1e3" in r["model"]]
        if realistic:
            best = min(realistic, key=lambda r: (round(r["model"]["kid_1e3"], 2), r["num_steps"], key(r)))
            chosen["realism"] = {**best, "psnr_floor_db": round(bicubic + margin, 3)}
            break
    return chosen


def recipe_of(row: dict[str, Any]) -> dict[str, Any]:
    """The config.json recipe (`Recipe.from_dict` input) of a measured row."""
    return {"sampler": row["sampler"], "num_steps": row["num_steps"], "spacing": row["spacing"],
            "start_noise_level": None, "consistency": row["consistency"], "eta": row["eta"]}
