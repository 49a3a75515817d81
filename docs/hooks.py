"""MkDocs hooks (mkdocs.yml `hooks:`): what the pages use from outside docs/, added at build time.

- The model cards, `sr3infer/bundled/<name>/README.md`, become the pages `models/<name>.md` (any YAML front
  matter, the Hub's metadata, is left out of the page); their text lives only in the package.
- The pages link the repository's pictures as `../examples/...` and `../benchmarks/...` (the cards as
  `../../../benchmarks/...`), which works on GitHub; those files are added to the site at their repository paths
  and the links are rewritten to reach them there. A card's link to another card becomes a link to its page.
- A line `--8<-- "README.md:NAME"` includes the README.md lines between `<!-- --8<-- [start:NAME] -->` and
  `<!-- --8<-- [end:NAME] -->` (the snippet syntax of pymdownx.snippets), their `docs/...` links made relative to
  docs/: the install, quickstart, models table and test commands are written once, in README.md.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
CARDS = sorted((REPO / "sr3infer" / "bundled").glob("*/README.md"))
README = REPO / "README.md"
INCLUDE = re.compile(r'^--8<-- "README\.md:([\w-]+)"$', re.MULTILINE)
OUTSIDE = re.compile(r"\]\((?:\.\./)+((?:examples|benchmarks)/[^)#\s]+)\)")  # a card is 3 folders down, a page 1
CARD_LINK = re.compile(r"\]\(\.\./([\w.-]+)/README\.md\)")  # one card to another: ../<name>/README.md


def _card(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            text = text[end + 5:]
    return text.lstrip("\n")


def readme_section(name: str) -> str:
    """The README.md lines between the start and end markers of section `name`."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"^<!-- --8<-- \[start:{name}\] -->\n(.*?)^<!-- --8<-- \[end:{name}\] -->$", text,
                      re.MULTILINE | re.DOTALL)
    if found is None:
        raise ValueError(f"README.md has no section {name!r} (<!-- --8<-- [start:{name}] --> ... [end:{name}])")
    return found.group(1)


def on_files(files: Files, config) -> Files:
    for card in CARDS:
        files.append(File.generated(config, f"models/{card.parent.name}.md", content=_card(card)))
    wanted: set[str] = set()
    for page in [*Path(config["docs_dir"]).glob("*.md"), *CARDS]:
        wanted.update(OUTSIDE.findall(page.read_text(encoding="utf-8")))
    for name in sorted(wanted):
        source = REPO / name
        if source.is_file():  # a missing one stays a broken link, which --strict reports
            files.append(File.generated(config, name, abs_src_path=str(source)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    markdown = INCLUDE.sub(lambda m: readme_section(m.group(1)).replace("](docs/", "]("), markdown)
    if page.file.src_uri.startswith("models/"):
        markdown = CARD_LINK.sub(r"](\1.md)", markdown)
    return OUTSIDE.sub(lambda m: "](" + "../" * page.file.src_uri.count("/") + m.group(1) + ")", markdown)
