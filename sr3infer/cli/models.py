"""`sr3infer models`: the known models and where each would load from."""

from __future__ import annotations

from .options import EXIT_OK, Parser


def cmd_models(argv: list[str]) -> int:
    parser = Parser(prog="sr3infer models", description="List the known models and where each would load from.")
    parser.add_argument("--cache-dir", help="Hub cache folder (default $HF_HUB_CACHE, else $HF_HOME/hub)")
    args = parser.parse_args(argv)
    from ..hub.fetch import list_models

    rows = [("NAME", "SCALE", "SIZE", "DOMAIN", "CACHED", "LOADS FROM")]
    for m in list_models(cache_dir=args.cache_dir):
        rows.append((m.name, f"x{m.task.scale}", f"{m.task.input_size}->{m.task.output_size}", m.task.domain,
                     "yes" if m.cached else "no", f"{m.source} ({m.location})"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return EXIT_OK
