"""The repository carries its own documentation: every document it mentions is inside it."""
from __future__ import annotations

import re
import subprocess

from devstack.launch import ROOT

TRACKED = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
TEXT = [p for p in TRACKED if p.endswith((".py", ".md", ".sh", ".toml", ".json", ".bicep", ".js", ".html"))
        and not p.endswith("package-lock.json")]
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
MENTIONED_DOC = re.compile(r"(?<![\w/.-])((?:\.\./|[\w.-]+/)*[A-Z][A-Z_]+\.md)\b")


def test_no_file_points_outside_the_repository() -> None:
    outside = "../" + "shared/"  # the reference folder beside the checkout (spelled so this file isn't one)
    offenders = [p for p in TEXT if outside in (ROOT / p).read_text(errors="ignore")]
    for path in (p for p in TEXT if p.endswith(".md")):
        for target in MARKDOWN_LINK.findall((ROOT / path).read_text(errors="ignore")):
            if "://" not in target and ROOT.resolve() not in (ROOT / path).parent.joinpath(target).resolve().parents:
                offenders.append(f"{path} -> {target}")
    assert offenders == []


def test_every_linked_or_mentioned_document_exists() -> None:
    missing = []
    for path in TEXT:
        text = (ROOT / path).read_text(errors="ignore")
        base = (ROOT / path).parent
        for target in MARKDOWN_LINK.findall(text) if path.endswith(".md") else []:
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (base / target).resolve().exists():
                missing.append(f"{path} -> {target}")
        for doc in MENTIONED_DOC.findall(text):
            name = doc.split("/")[-1]
            if not any(t.endswith("/" + name) or t == name for t in TRACKED) and not (base / doc).exists():
                missing.append(f"{path} mentions {doc}")
    assert missing == []


def test_the_project_documents_exist() -> None:
    for doc in ("docs/ARCHITECTURE.md", "docs/PROTOCOL.md", "devstack/FIDELITY.md"):
        assert doc in TRACKED, doc
