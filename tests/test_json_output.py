"""`--json`: one document per invocation, on success and on failure, valid against
docs/cli-json.schema.json (the schema docs/cli.md describes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import run_lincae, write_tone

Run = Callable[..., Any]
SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs/cli-json.schema.json").read_text())


def checked(text: str) -> dict[str, Any]:
    """The one JSON document in ``text`` (json.loads refuses trailing data), valid against the
    schema, its entries all with the same keys."""
    document = json.loads(text)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    assert len({tuple(entry) for entry in document["files"]}) <= 1, document["files"]
    return document


def _failure(document: dict[str, Any], fragment: str) -> None:
    assert document["status"] == "error" and fragment in document["error"], document


@pytest.fixture
def lats(cli: Run, tmp_path: Path) -> tuple[str, str]:
    for name, seed in (("a", 1), ("b", 2)):
        write_tone(tmp_path / f"{name}.wav", 0.3, seed=seed)
    result = cli("encode", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), model=True)
    assert result.exit_code == 0, result.stderr
    return str(tmp_path / "a.lat"), str(tmp_path / "b.lat")


def test_the_schema_is_a_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    # It catches what it is for: an entry without a key, a key no command has.
    entry = dict.fromkeys(SCHEMA["$defs"]["entry"]["required"]) | {"input": "a", "status": "ok"}
    document = {"command": "models list", "status": "ok", "error": None, "files": [], "models": []}
    jsonschema.validate(document, SCHEMA)
    for bad in (
        {**document, "x_realtime": 1.0},
        {**document, "status": "error"},  # an error needs its reason
        {**document, "command": "encode", "files": [entry]},  # no batch summary
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)


def test_encode_and_decode_documents(cli: Run, tmp_path: Path) -> None:
    write_tone(tmp_path / "in" / "a.wav", 0.2, seed=1)
    write_tone(tmp_path / "in" / "b.wav", 0.3, channels=2, seed=2)
    missing = str(tmp_path / "missing.wav")
    out = tmp_path / "lat"
    result = cli("encode", str(tmp_path / "in"), missing, "-o", str(out), "--json", model=True)
    assert result.exit_code == 1
    document = checked(result.stdout)
    _failure(document, f"1 of 3 failed: {missing}")
    assert (document["command"], document["ok"], document["failed"]) == ("encode", 2, 1)
    assert document["model"] == "tiny-test" and document["x_realtime"] > 0
    entries = {Path(entry["input"]).name: entry for entry in document["files"]}
    assert entries["b.wav"]["sample_rate"] == 44100 and entries["b.wav"]["channels"] == 2
    assert (
        entries["missing.wav"]["output"] is None
        and "no such file" in entries["missing.wav"]["error"]
    )

    result = cli("decode", str(out), "-o", str(tmp_path / "wav"), "--json", model=True)
    document = checked(result.stdout)
    assert result.exit_code == 0 and document["status"] == "ok" and document["error"] is None
    assert all(entry["peak"] is not None for entry in document["files"])


def test_latent_arithmetic_reports_its_inputs_and_no_throughput(
    cli: Run, tmp_path: Path, lats: tuple[str, str]
) -> None:
    a, b = lats
    document = checked(cli("mix", a, b, "-o", str(tmp_path / "m.lat"), "--json").stdout)
    (entry,) = document["files"]
    assert entry["input"] == f"{a}, {b}" and entry["inputs"] == [a, b]
    assert document["x_realtime"] is None and document["model"] is None
    assert entry["sample_rate"] == 44100 and entry["peak"] is None
    document = checked(cli("gain", a, "-6", "-o", str(tmp_path / "g.lat"), "--json").stdout)
    assert document["files"][0]["input"] == a and document["files"][0]["gain_db"] == pytest.approx(
        -6
    )
    # Decoding the result is model work: a throughput, and the decoded audio's facts.
    out = str(tmp_path / "s.wav")
    document = checked(cli("subtract", a, b, "-o", out, "--json", model=True).stdout)
    assert document["x_realtime"] > 0 and document["files"][0]["peak"] is not None


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["mix", "{a}", "-o", "{out}"], 2, "at least two"),
        (["mix", "{a}", "{missing}", "-o", "{out}"], 1, "no such file"),
        (["gain", "{missing}", "-6", "-o", "{out}"], 1, "no such file"),
        (["gain", "{a}", "loud", "-o", "{out}"], 1, "loud"),
        (["subtract", "{a}", "{a}", "-o", "{tmp}/x.mp4"], 1, "unknown output type"),
        (["encode"], 2, "Missing argument"),
        (["decode", "{a}", "--bogus"], 2, "No such option"),
        (["models", "pull"], 2, "Missing argument"),
        (["manifest", "{missing}"], 1, "not a folder"),
        (["eval", "{missing}"], 1, ""),
    ],
)
def test_a_failure_prints_one_error_document(
    tmp_path: Path, lats: tuple[str, str], args: list[str], code: int, fragment: str
) -> None:
    names = {"a": lats[0], "missing": str(tmp_path / "missing.lat"), "tmp": str(tmp_path)}
    names["out"] = str(tmp_path / "out.lat")
    words = [arg.format(**names) for arg in args]
    done = run_lincae([*words, "--json"])
    stderr = done.stderr.decode()
    assert done.returncode == code, stderr
    assert "Traceback" not in stderr and stderr.strip()  # the error is shown on stderr too
    document = checked(done.stdout.decode())
    expected = " ".join(words[:2]) if words[0] == "models" else words[0]
    assert document["command"] == expected
    _failure(document, fragment)
    assert not (tmp_path / "out.lat").exists()


def test_with_stdout_carrying_data_an_error_document_goes_to_stderr(tmp_path: Path) -> None:
    done = run_lincae(["gain", "-", "-6", "-o", "-", "--json"], input=b"not latents")
    assert done.returncode == 1 and done.stdout == b""  # nothing for the next command to read
    stderr = done.stderr.decode()
    assert stderr.startswith("lincae: error: <stdin>")
    _failure(checked(stderr[stderr.index("{") :]), "<stdin>")


def test_info_lists_unreadable_files(cli: Run, tmp_path: Path, lats: tuple[str, str]) -> None:
    (tmp_path / "text.lat").write_text("hello")
    missing = str(tmp_path / "missing.lat")
    result = cli("info", lats[0], str(tmp_path / "text.lat"), missing, "--json")
    assert result.exit_code == 1
    document = checked(result.stdout)
    _failure(document, "2 of 3 failed")
    entries = {Path(entry["input"]).name: entry for entry in document["files"]}
    good, bad = entries["a.lat"], entries["text.lat"]
    assert [good["status"], bad["status"], entries["missing.lat"]["status"]] == [
        "ok",
        *["failed"] * 2,
    ]
    assert good["input"] == lats[0] and good["model_name"] == "tiny-test" and good["frames"] == 3
    assert bad["model_name"] is None and "not a .lat file" in bad["error"]
    assert document["x_realtime"] is None and document["audio_seconds"] == pytest.approx(0.3)
    # The table shows the readable ones and exits 1 as well.
    table = cli("info", lats[0], missing)
    assert table.exit_code == 1 and "tiny-test" in table.stdout


def test_models_and_manifest_documents(cli: Run, tmp_path: Path, tiny_model_path: Path) -> None:
    listed = checked(cli("models", "list", "--json").stdout)
    assert listed["command"] == "models list" and listed["models"][0]["default"]
    assert checked(cli("models", "--json").stdout)["command"] == "models list"
    assert checked(cli("models", "path", "--json").stdout)["paths"]["lincae_cache"]

    write_tone(tmp_path / "music" / "a.wav", 0.2)
    encoded = cli("encode", str(tmp_path / "music"), "-o", str(tmp_path / "lat"), "--manifest",
                  "--json", model=True)  # fmt: skip
    assert encoded.exit_code == 0, encoded.stderr
    checked(encoded.stdout)
    merged = cli("manifest", str(tmp_path / "lat"), "--json")
    document = checked(merged.stdout)
    assert merged.exit_code == 0 and document["complete"] and document["ok"] == 1
    (tmp_path / "lat" / "a.lat").unlink()
    result = cli("manifest", str(tmp_path / "lat"), "--check", "--json")
    assert result.exit_code == 1
    _failure(checked(result.stdout), "1 missing")
