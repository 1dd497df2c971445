"""The exit-code contract (toolkit/exits.py, docs/REFERENCE.md "Exit codes"): each command's family, one
boundary in the CLI for whatever ends a command, stable error references in the JSON outputs (and the
fleet reading them), a closed pipe, an ASCII-only terminal."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from test_fleet_local import inventory, local

from toolkit import cli

from conftest import REPO, toolkit

LOCAL_ONLY = ("--skip", "gpu", "--skip", "docker", "--skip", "bmc", "--skip", "qdrant")


def test_health_cannot_write_its_report_is_unknown_and_names_the_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = toolkit("health", *LOCAL_ONLY, "--save-dir", str(blocker))
    # before: exit 2, which Nagios reads as CRITICAL
    assert proc.returncode == 3, proc.stderr
    assert f"toolkit: error: cannot use {blocker}" in proc.stderr and "Traceback" not in proc.stderr


def test_health_json_carries_the_reference_of_the_error_that_ended_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    prom = blocker / "node.prom"
    proc = toolkit("health", *LOCAL_ONLY, "--json", "--prom", str(prom))
    # before: exit 2 and nothing on stdout
    assert proc.returncode == 3, proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["ref"] == "file" and error["exit_code"] == 3 and str(blocker) in error["message"]
    settings = tmp_path / "health.yml"
    settings.write_text("[1, 2]\n")
    proc = toolkit("health", *LOCAL_ONLY, "--json", "--config", str(settings))
    assert proc.returncode == 3 and json.loads(proc.stdout)["error"]["ref"] == "settings"


def _crash(args):
    raise RuntimeError("something toolkit did not expect")


@pytest.mark.parametrize(("command", "code"), [("health", 3), ("bench", 2), ("report", 2)])
def test_an_unexpected_exception_ends_in_the_family_code_with_a_traceback_only_with_debug(
    capsys, command, code
):
    # the boundary itself, given a command whose run() raises (every real crash found was fixed at its cause)
    args = argparse.Namespace(command=command, json=True if command == "health" else "-")
    assert cli.run_command(_crash, args) == code
    out, err = capsys.readouterr()
    assert "toolkit: error: internal error: RuntimeError: something toolkit did not expect" in err
    assert "Traceback" not in err and "hint: this is a bug" in err
    assert json.loads(out)["error"] == {
        "ref": "internal",
        "message": "internal error: RuntimeError: something toolkit did not expect",
        "hint": "this is a bug in toolkit: run again with --debug for the traceback and report it",
        "exit_code": code,
    }
    assert cli.run_command(_crash, args, debug=True) == code
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_an_unexpected_exception_quoting_a_known_secret_is_redacted(capsys):
    from toolkit.health import secrets

    secrets.register("hunter2-in-a-url")

    def leaky(args):
        raise RuntimeError("https://admin:hunter2-in-a-url@bmc/redfish/v1 refused")

    assert cli.run_command(leaky, argparse.Namespace(command="health", json=True)) == 3
    out, err = capsys.readouterr()
    assert "hunter2-in-a-url" not in out + err and "admin:***@bmc" in err
    assert "***" in json.loads(out)["error"]["message"]


def test_an_interrupted_run_says_so_in_its_json(capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    assert cli.run_command(interrupted, argparse.Namespace(command="health", json=True)) == 130
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["ref"] == "interrupted" and "toolkit: error: interrupted" in err


@pytest.mark.parametrize("args", [("gpus",), ("gpus", "--json")])
def test_a_closed_pipe_is_a_quiet_exit_0(args):
    # `toolkit gpus | head -c 10`; before: exit 1 (rich's own exit on a broken pipe)
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )
    proc.stdout.read(10)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, stderr
    assert stderr == ""


@pytest.mark.parametrize(
    ("args", "codes"),
    [(("gpus",), {0}), (("bench", "--help"), {0}), (("health", *LOCAL_ONLY), {0, 1, 2})],
)
def test_an_ascii_only_stdout_gets_ascii_stand_ins(args, codes):
    # before: `toolkit gpus` and the health table died in a UnicodeEncodeError (exit 1)
    proc = toolkit(*args, env={"PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C"})
    assert proc.returncode in codes, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout.strip()
    if args == ("gpus",):
        assert "< this machine" in proc.stdout  # the ◀ mark, as ASCII


def test_a_missing_vault_password_file_is_one_clear_line(tmp_path):
    inv = inventory(tmp_path, {"alpha": local(tmp_path)})
    proc = toolkit("health", "-i", str(inv), "--vault-password-file", str(tmp_path / "nope"))
    # before: Ansible's traceback, exit 1
    assert proc.returncode == 3, proc.stderr
    assert "toolkit: error: no vault password file" in proc.stderr and "Traceback" not in proc.stderr


def test_the_fleet_classifies_a_node_by_the_reference_in_its_json(tmp_path):
    settings = tmp_path / "node-health.yml"
    settings.write_text("[1, 2]\n")  # the node's settings file holds no mapping: its health cannot run
    inv = inventory(tmp_path, {"alpha": local(tmp_path, health_report_config_path=str(settings))})
    proc = toolkit("health", "-i", str(inv), "--results-dir", str(tmp_path / "r"), "--json", *LOCAL_ONLY[:4])
    host = json.loads(proc.stdout)["hosts"][0]
    # before: no reference; the message was scraped from the node's stderr
    assert host["ref"] == "settings" and host["state"] == "unknown" and host["exit_code"] == 3
    assert "must hold a mapping" in host["message"]
    assert proc.returncode == 3
