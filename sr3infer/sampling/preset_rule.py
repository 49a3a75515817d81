"""The preset rule: which measured recipe becomes a model's `fidelity` and `realism` preset.

`benchmarks/preset_search.py` measures every recipe of `grid()` on a validation set, `choose`
applies the rule (`rule()` states it) and `recipe_of` gives the config.json recipe of a chosen row;
scripts/bundle_model.py and the tests use the same functions, so stored presets follow the rule. A
recipe may average K samples (`num_samples`): more PSNR, less realism, K times the calls.
"""

from __future__ import annotations

from typing import Any

__all__ = ["STEPS", "SAMPLER_VARIANTS", "SPACINGS", "CONSISTENCY", "MAX_CONSISTENCY_1E5", "PSNR_MARGIN_DB",
           "PSNR_TOLERANCE_DB", "KID_TOLERANCE", "REALISM_MIN_PSNR_DB", "RULE", "rule", "grid", "key",
           "network_calls", "choose", "recipe_of", "pool"]

STEPS = (1, 2, 3, 5, 10, 20, 50)
SAMPLER_VARIANTS = (("ddim", 0.0), ("ddim", 0.5), ("ddim", 1.0), ("ancestral", 0.0), ("dpmpp_2m", 0.0))
SPACINGS = ("linear", "quadratic", "trailing")
CONSISTENCY = ("every", "final")  # "none" never reaches consistency <= 1e-5 (bicubic is at 45e-5 on faces)
MAX_CONSISTENCY_1E5 = 1.0
PSNR_MARGIN_DB = 0.5
PSNR_TOLERANCE_DB = 0.05
KID_TOLERANCE = 0.05
# A model's own realism floor, where its issue names the operating point (the face model's operating point:
# "realism KID <= 35 at PSNR >= 23.5"); other models use bicubic + PSNR_MARGIN_DB.
REALISM_MIN_PSNR_DB = {"sr3-face-8x": 23.5}


def rule(min_psnr_db: float | None = None) -> str:
    """The rule in words, as stored in the search JSON and the model card."""
    floor = (f"max(bicubic + {PSNR_MARGIN_DB} dB, {min_psnr_db:g} dB) (then bicubic + {PSNR_MARGIN_DB} dB, then bicubic, "
             "if no recipe reaches it)" if min_psnr_db is not None else
             f"bicubic + {PSNR_MARGIN_DB} dB (bicubic + 0 dB if no recipe reaches that)")
    return (f"among recipes with consistency <= {MAX_CONSISTENCY_1E5:g}e-5: fidelity = the fewest network calls with "
            f"PSNR within {PSNR_TOLERANCE_DB} dB of the best; realism = among recipes with PSNR >= {floor}, the fewest "
            f"network calls with KID within {KID_TOLERANCE:.0%} of the lowest; ties to the better metric; all val images")


RULE = rule()


def grid(steps=STEPS, variants=SAMPLER_VARIANTS, spacings=SPACINGS, consistency=CONSISTENCY,
         samples=(1,)) -> list[dict[str, Any]]:
    """The recipes to measure, fewest steps first, so a budget-limited run covers a prefix; one-step
    recipes once per consistency mode; `samples` are the K of each recipe."""
    recipes = []
    for k in samples:
        extra = {} if k == 1 else {"num_samples": int(k)}
        for n in sorted(steps):
            for mode in consistency:
                if n == 1:
                    recipes.append({"sampler": "ddim", "eta": 0.0, "num_steps": 1, "spacing": "linear",
                                    "consistency": mode, **extra})
                    continue
                for sampler, eta in variants:
                    for spacing in spacings:
                        recipes.append({"sampler": sampler, "eta": eta, "num_steps": n, "spacing": spacing,
                                        "consistency": mode, **extra})
    return recipes


def key(recipe: dict[str, Any]) -> str:
    """The row key of a recipe, e.g. "ddim|eta=1|10|quadratic|every" ("...|mean16": 16 samples)."""
    k = int(recipe.get("num_samples", 1))
    return (f"{recipe['sampler']}|eta={recipe['eta']:g}|{recipe['num_steps']}|{recipe['spacing']}|{recipe['consistency']}"
            + (f"|mean{k}" if k > 1 else ""))


def network_calls(row: dict[str, Any]) -> int:
    """U-Net evaluations per image of a recipe: one per step for each of its K samples."""
    return int(row["num_steps"]) * int(row.get("num_samples", 1))


def choose(runs: dict[str, dict[str, Any]], min_psnr_db: float | None = None,
           max_consistency_1e5: float | None = MAX_CONSISTENCY_1E5) -> dict[str, dict[str, Any]]:
    """The two presets by the rule from the measured rows ({} when none is consistent);
    `min_psnr_db` is the model's realism floor, used when above bicubic + 0.5 dB; `max_consistency_1e5` None drops
    the consistency condition (a model for degraded inputs, which are not the bicubic downsampling of the truth)."""
    rows = [r for r in runs.values() if "same_as" not in r
            and (max_consistency_1e5 is None or r["model"]["consistency_1e5"] <= max_consistency_1e5)]
    if not rows:
        return {}
    bicubic = rows[0]["bicubic"]["psnr"]
    best_psnr = max(r["model"]["psnr"] for r in rows)
    near_best = [r for r in rows if r["model"]["psnr"] >= best_psnr - PSNR_TOLERANCE_DB]
    chosen = {"fidelity": min(near_best, key=lambda r: (network_calls(r), -r["model"]["psnr"], key(r)))}
    floors = [bicubic + PSNR_MARGIN_DB, bicubic]  # a model that never reaches bicubic + 0.5 dB: the floor drops to bicubic
    if min_psnr_db is not None and min_psnr_db > floors[0]:
        floors.insert(0, min_psnr_db)
    for floor in floors:
        realistic = [r for r in rows if r["model"]["psnr"] >= floor and "kid_1e3" in r["model"]]
        if realistic:
            lowest = min(r["model"]["kid_1e3"] for r in realistic)
            near_lowest = [r for r in realistic if r["model"]["kid_1e3"] <= lowest * (1 + KID_TOLERANCE)]
            best = min(near_lowest, key=lambda r: (network_calls(r), r["model"]["kid_1e3"], key(r)))
            chosen["realism"] = {**best, "psnr_floor_db": round(floor, 3)}
            break
    return chosen


def recipe_of(row: dict[str, Any]) -> dict[str, Any]:
    """The config.json recipe (`Recipe.from_dict` input) of a measured row."""
    recipe = {"sampler": row["sampler"], "num_steps": row["num_steps"], "spacing": row["spacing"],
              "start_noise_level": None, "consistency": row["consistency"], "eta": row["eta"]}
    k = int(row.get("num_samples", 1))
    return recipe if k == 1 else {**recipe, "num_samples": k}


def pool(sets: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Rows measured on several sets ({key: row} each) -> one row per key measured on every set, its metrics (and
    bicubic's) the means over the sets: the pooled set of a degraded val, one set per degradation kind."""
    common = set(sets[0]).intersection(*sets[1:]) if sets else set()
    pooled = {}
    for k in sorted(common):
        rows = [s[k] for s in sets]
        mean = {side: {m: sum(r[side][m] for r in rows) / len(rows) for m in rows[0][side]
                       if all(m in r[side] for r in rows)} for side in ("model", "bicubic")}
        pooled[k] = {**{f: v for f, v in rows[0].items() if f not in ("model", "bicubic")}, **mean}
    return pooled
