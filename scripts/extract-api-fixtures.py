#!/usr/bin/env python3
"""Copies every JSON example of the Detect API's pages (../shared/api-docs) into test fixtures.

Responses come from ```json blocks (Markdown) or from the numbered-line renderings of the older pages
(each line prefixed with its number); request bodies come from curl's --data '...'. Each example is
written as it stands in the page, except for the line numbers the rendering added.
Usage: scripts/extract-api-fixtures.py [api-docs dir] [fixtures dir]
"""
import json
import pathlib
import re
import sys

docs = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/api-docs")
out = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "Tests/ResembleDetectTests/Fixtures")
out.mkdir(parents=True, exist_ok=True)
for old in out.glob("*.json"):
    old.unlink()


def write(name, text):
    json.loads(text)  # every fixture must be valid JSON as extracted
    (out / name).write_text(text if text.endswith("\n") else text + "\n")
    print(f"{name}: {len(text)} bytes")


for page in sorted(docs.iterdir()):
    if page.name == "FACTS.md":
        continue
    source = page.read_text()
    stem = page.stem
    responses = re.findall(r"```json\n(.*?)```", source, re.S)
    # Numbered renderings: "1{" then "2 ..." lines up to the closing brace.
    for block in re.findall(r"(?m)^1\{\n(?:\d+ .*\n|\d+\}\n?)+", source):
        lines = [re.sub(r"^\d+ ?", "", line) for line in block.splitlines()]
        responses.append("\n".join(lines) + "\n")
    for index, text in enumerate(responses, 1):
        write(f"{stem}-response-{index}.json", text)
    requests = re.findall(r"--data '(\{.*?\})'", source, re.S)
    for index, text in enumerate(requests, 1):
        text = "\n".join(re.sub(r"^> ?", "", line) for line in text.splitlines())
        write(f"{stem}-request-{index}.json", text)
