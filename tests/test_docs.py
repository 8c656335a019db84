"""The documentation's examples are real files, and its commands run as written.

* Every ```python block of README.md and docs/*.md (but the pages other people own) is introduced by
  `<!-- example: examples/NAME.py -->` and is byte-identical to that file.
* In the pages of DOCS_TO_RUN, every `zart ...` and `python ...` line of the ```bash and
  ```console blocks runs, in page order, in examples/ and on a database of the page's own: a
  `zart worker` or `zart supervise` line starts it in the background, where it runs until the page
  ends (and must then exit 0 on SIGTERM). Other lines (`pip`, `docker`, `export`, ...) are not run.
  A ```console block shows `$ COMMAND` lines, each followed by its exact output (stdout, then
  stderr); the command must exit 1 if the output shows a `zart: error:` line, else 0. A ```bash
  line must exit 0.
* In those pages, every ```sql block runs too, in page order, on the page's database.
* Every example file shown in the docs is run by one of those commands.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import orjson
import psycopg
import pytest

from .conftest import _create_database, _drop_database
from .helpers import REPO_ROOT, WORKER_STARTED, stop_process, wait_until, zart_command

EXAMPLES = REPO_ROOT / "examples"
OWNED_BY_OTHERS = {"docs/architecture.md", "docs/benchmarks.md"}
DOCS_TO_RUN = [
    "README.md",
    "docs/getting-started.md",
    "docs/cli.md",
    "docs/concepts.md",
    "docs/retries-and-timeouts.md",
    "docs/sleep-and-events.md",
    "docs/parallel-and-loops.md",
    "docs/queues.md",
    "docs/operations.md",
    "docs/streams.md",
    "docs/composition.md",
    "docs/transactions.md",
    "docs/testing.md",
]
BACKGROUND = (["zart", "worker"], ["zart", "supervise"])  # commands that run until the page ends
COMMAND_TIMEOUT = 60

FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!-- example: (\S+) -->$")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def doc_pages() -> list[str]:
    pages = ["README.md", *sorted(f"docs/{path.name}" for path in (REPO_ROOT / "docs").glob("*.md"))]
    return [page for page in pages if page not in OWNED_BY_OTHERS]


@attrs.frozen
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str  # the content, each line ending with a newline
    marker: str | None  # the example file named on the line before the fence, if any

    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    lines = (REPO_ROOT / page).read_text().splitlines(keepends=True)
    found = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index].rstrip("\n"))
        if not opening or not opening.group(1):
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip("\n") != "```":
            end += 1
        assert end < len(lines), f"{page}:{index + 1}: code block is not closed"
        before = lines[index - 1].strip() if index > 0 else ""
        marker = MARKER.match(before)
        found.append(
            Block(
                page,
                index + 1,
                opening.group(1),
                "".join(lines[index + 1 : end]),
                marker.group(1) if marker else None,
            )
        )
        index = end + 1
    return found


# -- the python blocks are the example files ------------------------------------------------------


@pytest.mark.parametrize("page", doc_pages())
def test_python_blocks_are_the_example_files(page):
    python_blocks = [b for b in blocks(page) if b.lang == "python"]
    for block in python_blocks:
        assert block.marker, (
            f"{block.where()}: a ```python block must follow a line `<!-- example: examples/NAME.py -->`"
        )
        path = REPO_ROOT / block.marker
        assert block.marker.startswith("examples/") and path.is_file(), f"{block.where()}: no {path}"
        assert block.text == path.read_text(), f"{block.where()}: the block differs from {block.marker}"


def test_every_example_shown_in_the_docs_is_run():
    shown = {b.marker for page in doc_pages() for b in blocks(page) if b.lang == "python"}
    run = " ".join(
        " ".join(argv) for page in DOCS_TO_RUN for block in blocks(page) for argv, _ in commands(block)
    )
    ran = {
        marker
        for marker in shown
        if re.search(rf"(\b{Path(marker).stem}\.py\b|--app {Path(marker).stem}\b)", run)
    }
    # A module that an example run by a command imports (the workflows a test file tests) runs too.
    imported = " ".join((REPO_ROOT / marker).read_text() for marker in ran)
    for marker in sorted(shown - ran):
        stem = Path(marker).stem
        assert re.search(rf"^(from {stem} import|import {stem}$)", imported, re.M), (
            f"no command of the docs runs {marker}, nor imports it from an example that one runs"
        )


@pytest.mark.parametrize("page", doc_pages())
def test_relative_links_point_at_files(page):
    text = (REPO_ROOT / page).read_text()
    for target in LINK.findall(text):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        path = (REPO_ROOT / page).parent / target.split("#")[0]
        assert path.exists(), f"{page}: broken link {target}"


# -- the shell blocks run -----------------------------------------------------------------------------


def command(line: str) -> list[str] | None:
    """The argv to run for one shell line, or None when the docs' tests do not run such a line."""
    words = shlex.split(line, comments=True)
    if words and words[-1] == "&":
        words = words[:-1]
    if not words or words[0] not in ("zart", "python"):
        return None
    for word in words:
        assert word not in ("&&", "||", "|", ";", ">", "<", "&"), f"unsupported shell syntax in: {line}"
    return words


def commands(block: Block) -> list[tuple[list[str], list[str] | None]]:
    """(argv, expected output lines or None) for each line of `block` that runs."""
    found: list[tuple[list[str], list[str] | None]] = []
    if block.lang == "bash":
        for line in block.text.splitlines():
            argv = command(line)
            if argv is not None:
                found.append((argv, None))
    elif block.lang == "console":
        for line in block.text.splitlines():
            if line.startswith("$ "):
                argv = command(line[2:])
                assert argv is not None, f"{block.where()}: console blocks run zart and python only: {line}"
                found.append((argv, []))
            else:
                assert found, f"{block.where()}: output before the first `$ ` line"
                found[-1][1].append(line)
    return found


def executable(argv: list[str]) -> list[str]:
    if argv[0] == "zart":
        return zart_command(*argv[1:])
    return [sys.executable, *argv[1:]]


@attrs.frozen
class Ran:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def workers_started_by(argv: list[str]) -> int:
    """How many `worker.started` lines the command logs once it is up: --procs of supervise, else 1."""
    if argv[1] == "supervise" and "--procs" in argv:
        return int(argv[argv.index("--procs") + 1])
    return 1


class BackgroundWorker:
    """A `zart worker` or `zart supervise` line of the docs, running until the page ends."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            executable(argv), env=env, cwd=EXAMPLES, stdout=self._log, stderr=subprocess.STDOUT
        )
        expected = workers_started_by(argv)
        wait_until(
            lambda: log_path.read_text().count(WORKER_STARTED) >= expected or self.process.poll() is not None,
            60,
            what=f"`{shlex.join(argv)}` to start",
        )
        assert self.process.poll() is None, f"`{shlex.join(argv)}` exited:\n{log_path.read_text()}"

    def stop(self) -> int:
        code = stop_process(self.process)
        self._log.close()
        return code


@pytest.fixture
def page_database(server_url: str) -> Iterator[str]:
    """An empty database (not even migrated): the page's commands must work from scratch."""
    name, url = _create_database(server_url)
    yield url
    _drop_database(server_url, name)


def run_page(page: str, url: str, tmp_path: Path) -> list[Ran]:
    env = dict(os.environ)
    env["ZART_DATABASE_URL"] = url
    env["ZART_EMBEDDED_DIR"] = str(tmp_path / "pgdata")  # never touch a developer's ./.zart
    env.pop("ZART_TEST_EFFECTS_URL", None)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    ran: list[Ran] = []
    workers: list[BackgroundWorker] = []
    try:
        for block in blocks(page):
            if block.lang == "sql":
                run_sql(block, url)
            for argv, expected in commands(block):
                shown = f"{block.where()}: `{shlex.join(argv)}`"
                if argv[:2] in BACKGROUND:
                    assert expected is None, f"{shown}: show `{shlex.join(argv[:2])}` in a ```bash block"
                    workers.append(BackgroundWorker(argv, env, tmp_path / f"worker-{len(workers)}.log"))
                    continue
                try:
                    result = subprocess.run(
                        executable(argv),
                        env=env,
                        cwd=EXAMPLES,
                        capture_output=True,
                        text=True,
                        timeout=COMMAND_TIMEOUT,
                    )
                except subprocess.TimeoutExpired:
                    logs = "\n".join(worker.log_path.read_text() for worker in workers)
                    raise AssertionError(f"{shown} timed out; the workers' logs:\n{logs}") from None
                ran.append(Ran(argv, result.returncode, result.stdout, result.stderr))
                report = (
                    f"{shown} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
                )
                if expected is None:
                    assert result.returncode == 0, report
                    continue
                assert (result.stdout + result.stderr).splitlines() == expected, report
                fails = any(line.startswith("zart: error: ") for line in expected)
                assert result.returncode == (1 if fails else 0), report
    finally:
        codes = [(worker.argv, worker.stop(), worker.log_path.read_text()) for worker in workers]
    for argv, code, log in codes:
        assert code == 0, f"`{shlex.join(argv)}` exited {code} on SIGTERM:\n{log}"
    return ran


def run_sql(block: Block, url: str) -> None:
    """A ```sql block of the docs: its statements must run on the page's database."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(block.text.encode())
    except psycopg.Error as error:
        raise AssertionError(f"{block.where()}: the SQL failed: {error}") from None


@pytest.mark.parametrize("page", DOCS_TO_RUN)
def test_the_commands_of_the_docs_run(page, page_database, tmp_path):
    ran = run_page(page, page_database, tmp_path)
    assert ran, f"{page} has no command to run"
    if page == "README.md":
        check_readme_quickstart(ran)


def check_readme_quickstart(ran: list[Ran]) -> None:
    """The README's bash block shows no output: check what its commands print here."""
    by_command = {shlex.join(r.argv[:2]): r for r in ran}
    assert by_command["zart migrate"].stdout.startswith("applied 0001_core\n")
    started = by_command["zart start"]
    assert orjson.loads(started.stdout) == {
        "reservation": "reservation-42",
        "txn": "txn-order-42/charge-card#1",
    }
    assert by_command["zart status"].stdout.splitlines() == [
        "completed",
        'result: {"reservation":"reservation-42","txn":"txn-order-42/charge-card#1"}',
    ]


def test_the_dice_example_records_its_roll(page_database, tmp_path):
    """determinism.py prints a random roll, so its docs block shows no output: check it here."""
    env = dict(os.environ, ZART_DATABASE_URL=page_database)
    env.pop("ZART_TEST_EFFECTS_URL", None)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    outputs = []
    for _ in range(2):  # the second run finds the execution and prints the recorded roll again
        result = subprocess.run(
            [sys.executable, "determinism.py"],
            env=env,
            cwd=EXAMPLES,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    first, same = outputs[0].splitlines()
    match = re.fullmatch(r"\{'roll': ([1-6]), 'prize': (None|'ada wins (\d+) coins')\}", first)
    assert match, first
    roll = int(match.group(1))
    assert (match.group(2) == "None") == (roll < 4)
    assert same == "True"
