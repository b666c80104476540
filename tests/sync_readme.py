"""Regenerate the README's configuration table: ``python tests/sync_readme.py``."""

from pathlib import Path

from mcdpf.config import reference_table

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def readme_table(text: str) -> str:
    return text[text.index(START) + len(START):text.index(END)].strip()


def sync(path: Path) -> None:
    text = path.read_text()
    head, tail = text[:text.index(START) + len(START)], text[text.index(END):]
    path.write_text(f"{head}\n{reference_table()}\n{tail}")


if __name__ == "__main__":
    sync(Path(__file__).resolve().parents[1] / "README.md")
