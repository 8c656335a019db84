"""The deployment examples (examples/deploy/) are valid, and their `zart` commands are the real CLI's.

* Each file is shown in the docs, byte-identical, after `<!-- example: examples/deploy/NAME -->`, and
  every such block of the docs is its file.
* The systemd unit parses (sections, keys; `systemd-analyze verify` has nothing to say where it
  exists); the Kubernetes manifest is a list of documents whose `command:` lines are JSON lists
  (with PyYAML, which the dev extras bring, the whole manifest is checked too).
* Every `zart ...` command line in them is parsed by the CLI's own click commands, as `zart` would
  parse it, with its durations read as the commands read them: a misspelled option, a value of the
  wrong type or a bad duration fails here. Their `--app` modules are modules of examples/.
* The stop timeout given to systemd and Kubernetes exceeds `--grace` plus 5 s, when the supervisor
  kills the workers left.
* The unit's command runs: after the Job's `zart migrate`, it starts its workers on a fresh database
  in examples/ and exits 0 on SIGTERM within the unit's stop timeout.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import psycopg
import pytest

from zart import cli
from zart.durations import parse_duration

from .conftest import _create_database, _drop_database
from .helpers import REPO_ROOT, WORKER_STARTED, stop_process, wait_until, zart_command
from .test_docs import blocks, doc_pages

DEPLOY = REPO_ROOT / "examples" / "deploy"
UNIT = DEPLOY / "zart-worker.service"
MANIFEST = DEPLOY / "kubernetes.yaml"
# The supervisor SIGKILLs the workers still alive this long after --grace (zart.supervisor).
KILL_AFTER_GRACE = 5.0
DURATIONS = ("grace", "lease", "poll_interval", "lookahead")


# -- the docs show the files --------------------------------------------------------------------------


def test_every_deploy_file_is_shown_in_the_docs_as_it_is():
    shown: dict[str, list[str]] = {}
    for page in doc_pages():
        for block in blocks(page):
            if block.marker and not block.marker.endswith(".py"):
                path = REPO_ROOT / block.marker
                assert path.is_file(), f"{block.where()}: no {block.marker}"
                assert block.text == path.read_text(), (
                    f"{block.where()}: the block differs from {block.marker}"
                )
                shown.setdefault(block.marker, []).append(block.where())
    for path in sorted(DEPLOY.iterdir()):
        assert f"examples/deploy/{path.name}" in shown, f"no page of the docs shows {path}"


# -- zart command lines --------------------------------------------------------------------------------


def parse_zart_command(argv: list[str]) -> click.Context:
    """`argv` (a `zart SUBCOMMAND ...` line) parsed by the CLI's click command, as `zart` parses it.

    Raises click's UsageError for an unknown option or a bad value, ValueError for a bad duration.
    """
    assert Path(argv[0]).name == "zart", f"not a zart command: {shlex.join(argv)}"
    parent = click.Context(cli.main, info_name="zart")
    command = cli.main.get_command(parent, argv[1])
    assert command is not None, f"no command `zart {argv[1]}`"
    context = command.make_context(argv[1], list(argv[2:]), parent=parent)
    for name in DURATIONS:  # read when the command runs (Worker, Supervisor), not by click
        if context.params.get(name) is not None:
            parse_duration(context.params[name], f"--{name.replace('_', '-')}")
    for app in context.params.get("apps", ()):
        assert importlib.util.find_spec(app) is not None, f"--app {app}: no such module in examples/"
    return context


@pytest.fixture(autouse=True)
def examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "examples"))


@pytest.mark.parametrize(
    "line",
    [
        "zart supervise --prcs 2 --app shop",  # misspelled option
        "zart supervise --procs two --app shop",  # not a number
        "zart supervise --grace 60 seconds --app shop",  # a stray argument
        "zart supervise --grace soon --app shop",  # not a duration
        "zart worker --lease 0s --app shop",  # not a positive duration
        "zart supervise --app no_such_module",  # no such app
        "zart migrat",  # no such command
    ],
)
def test_the_check_refuses_a_wrong_command(line):
    with pytest.raises((click.UsageError, ValueError, AssertionError)):
        parse_zart_command(shlex.split(line))


# -- systemd ----------------------------------------------------------------------------------------


def read_unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=True, interpolation=None, comment_prefixes=("#", ";"))
    unit.optionxform = str  # systemd's keys are case-sensitive
    unit.read_string(UNIT.read_text())
    return unit


def test_the_systemd_unit_is_valid():
    unit = read_unit()
    assert unit.sections() == ["Unit", "Service", "Install"]
    service = unit["Service"]
    assert service["KillMode"] == "mixed"  # the SIGTERM goes to the supervisor, which drains
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "always"
    argv = shlex.split(service["ExecStart"])
    context = parse_zart_command(argv)
    assert context.info_name == "supervise"
    grace = parse_duration(context.params["grace"])
    assert int(service["TimeoutStopSec"]) > grace + KILL_AFTER_GRACE


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # The unit names its own virtualenv's zart, which verify requires to be executable: point it at ours.
    unit = UNIT.read_text()
    executable = shlex.split(read_unit()["Service"]["ExecStart"])[0]
    ours = shutil.which("zart", path=str(Path(sys.executable).parent)) or shutil.which("zart")
    assert ours, "no zart executable next to this Python"
    (tmp_path / UNIT.name).write_text(unit.replace(executable, ours))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / UNIT.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and bad values, which it reports: it must report nothing.
    problems = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


# -- Kubernetes ---------------------------------------------------------------------------------------

COMMAND = re.compile(r"^\s+(?:- )?command: (\[.*\])$", re.M)


def manifest_documents() -> list[str]:
    text = MANIFEST.read_text()
    assert "\t" not in text, "YAML indents with spaces"
    return [doc for doc in re.split(r"^---$", text, flags=re.M) if doc.strip()]


def commands_of(document: str) -> list[list[str]]:
    return [json.loads(found) for found in COMMAND.findall(document)]


def test_the_kubernetes_manifest_is_valid():
    documents = manifest_documents()
    kinds = [re.search(r"^kind: (\w+)$", doc, re.M).group(1) for doc in documents]
    assert kinds == ["Job", "Deployment"]
    job, deployment = documents
    assert re.search(r"^apiVersion: batch/v1$", job, re.M)
    assert re.search(r"^apiVersion: apps/v1$", deployment, re.M)
    for document in documents:
        assert (
            "name: ZART_DATABASE_URL" in document
            and "secretKeyRef: {name: zart-database, key: url}" in document
        )
    (migrate,) = commands_of(job)
    assert parse_zart_command(migrate).info_name == "migrate"
    (supervise,) = commands_of(deployment)
    context = parse_zart_command(supervise)
    assert context.info_name == "supervise"
    assert context.params["procs"] == 2
    period = int(re.search(r"^\s+terminationGracePeriodSeconds: (\d+)$", deployment, re.M).group(1))
    assert period > parse_duration(context.params["grace"]) + KILL_AFTER_GRACE


def test_the_kubernetes_manifest_parses_as_yaml():
    yaml = pytest.importorskip("yaml")
    job, deployment = yaml.safe_load_all(MANIFEST.read_text())
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == commands_of(manifest_documents()[0])[0]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    spec = deployment["spec"]
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pod = spec["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["command"] == commands_of(manifest_documents()[1])[0]
    assert "lifecycle" not in worker  # no preStop hook: the SIGTERM drains
    assert worker["resources"]["limits"]["cpu"] == str(parse_zart_command(worker["command"]).params["procs"])
    for container in (migrate, worker):
        (env,) = container["env"]
        assert env == {
            "name": "ZART_DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": "zart-database", "key": "url"}},
        }
    metrics = parse_zart_command(worker["command"]).params["metrics_port"]
    assert worker["ports"] == [{"name": "metrics", "containerPort": metrics}]


# -- the commands run ---------------------------------------------------------------------------------


def test_the_deploy_commands_run(server_url, tmp_path):
    """The Job's `zart migrate`, then the unit's `zart supervise`: workers start, SIGTERM drains them."""
    name, url = _create_database(server_url)
    env = dict(os.environ, ZART_DATABASE_URL=url, ZART_EMBEDDED_DIR=str(tmp_path / "pgdata"))
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ZART_TEST_EFFECTS_URL", None)
    try:
        (migrate,) = commands_of(manifest_documents()[0])
        result = subprocess.run(
            zart_command(*migrate[1:]), env=env, cwd=DEPLOY.parent, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0 and result.stdout.startswith("applied 0001_core\n"), result

        service = read_unit()["Service"]
        argv = shlex.split(service["ExecStart"])
        log_path = tmp_path / "supervise.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                zart_command(*argv[1:]), env=env, cwd=DEPLOY.parent, stdout=log, stderr=subprocess.STDOUT
            )
            procs = parse_zart_command(argv).params["procs"]
            wait_until(
                lambda: log_path.read_text().count(WORKER_STARTED) >= procs or process.poll() is not None,
                60,
                what="the unit's workers to start",
            )
            assert process.poll() is None, log_path.read_text()
            started = time.monotonic()
            code = stop_process(process, grace=float(service["TimeoutStopSec"]))
        assert code == 0, log_path.read_text()
        assert time.monotonic() - started < float(service["TimeoutStopSec"])
        assert "event=supervisor.stopped" in log_path.read_text()
    finally:
        _drop_database(server_url, name)


# -- the failover URL ---------------------------------------------------------------------------------


def test_the_failover_url_of_the_docs_is_a_valid_libpq_url():
    """libpq refuses unknown parameters: every one the docs recommend is one libpq knows."""
    from psycopg import conninfo

    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    (url,) = re.findall(
        r"^export ZART_DATABASE_URL='(postgresql://[^']*target_session_attrs[^']*)'$", text, re.M
    )
    params = conninfo.conninfo_to_dict(url)
    assert params["host"] == "db1.internal,db2.internal" and params["port"] == "5432,5432"
    assert params["target_session_attrs"] == "read-write"
    # Zart adds its keepalives to a URL without them (zart.db.KEEPALIVES): each is one libpq knows.
    from zart.db import KEEPALIVES

    with_keepalives = url + "".join(f"&{name}={value}" for name, value in KEEPALIVES.items())
    assert conninfo.conninfo_to_dict(with_keepalives)["keepalives_idle"] == KEEPALIVES["keepalives_idle"]
    with pytest.raises(psycopg.ProgrammingError):  # the check is real: a misspelled parameter fails
        conninfo.conninfo_to_dict(url + "&keepalive_idle=10")
