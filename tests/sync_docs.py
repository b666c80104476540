"""Regenerate the configuration reference in docs/user-guide.md: ``python tests/sync_docs.py``."""

from pathlib import Path

from mcdpf.config import reference_table

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def reference_in(text: str) -> str:
    return text[text.index(START) + len(START):text.index(END)].strip()


def sync(path: Path) -> None:
    text = path.read_text()
    head, tail = text[:text.index(START) + len(START)], text[text.index(END):]
    path.write_text(f"{head}\n{reference_table()}\n{tail}")


if __name__ == "__main__":
    sync(Path(__file__).resolve().parents[1] / "docs" / "user-guide.md")
