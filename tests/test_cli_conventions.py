"""sox conventions on the command line: gains in dB, `-inf`, usage errors, honest help texts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest
import soundfile
import typer

from lincae_cli.cli.info import operations
from lincae_cli.latents.latfile import read_lat
from tests.conftest import write_tone

Run = Callable[..., Any]


def _ok(result: Any) -> Any:
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result


@pytest.fixture
def two_lats(cli: Run, tmp_path: Path) -> tuple[str, str]:
    write_tone(tmp_path / "a.wav", 0.6, seed=1)
    write_tone(tmp_path / "b.wav", 0.6, seed=2)
    _ok(cli("encode", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), model=True))
    return str(tmp_path / "a.lat"), str(tmp_path / "b.lat")


def _result(cli: Run, tmp_path: Path, *args: str) -> np.ndarray:
    out = tmp_path / "out.lat"
    _ok(cli(*args, "-o", str(out), "--dtype", "float32", "--force"))
    return read_lat(out).latents


# -- gains are decibels, as in sox; factors are written x0.5 --------------------------------


def test_a_bare_gain_is_decibels_and_a_factor_says_x(
    cli: Run, tmp_path: Path, two_lats: tuple[str, str]
) -> None:
    pa, pb = two_lats
    a, b = read_lat(pa).latents, read_lat(pb).latents
    minus_6_db = 10 ** (-6 / 20)
    assert np.array_equal(_result(cli, tmp_path, "gain", pa, "-6"), a * minus_6_db)
    assert np.array_equal(_result(cli, tmp_path, "gain", pa, "-6dB"), a * minus_6_db)
    assert np.array_equal(_result(cli, tmp_path, "gain", pa, "+3"), a * 10 ** (3 / 20))
    assert np.array_equal(_result(cli, tmp_path, "gain", pa, "x0.5"), a * 0.5)
    assert np.array_equal(_result(cli, tmp_path, "gain", pa, "x-1"), -a)
    mixed = _result(cli, tmp_path, "mix", pa, pb, "--gains", "0,-6")
    assert np.array_equal(mixed, a + b * minus_6_db)
    assert np.array_equal(_result(cli, tmp_path, "mix", pa, pb, "--gains", "x1,x0.5"), a + b * 0.5)


@pytest.mark.parametrize("mute", ["-inf", "-infdB"])
def test_minus_inf_mutes_and_is_not_read_as_options(
    cli: Run, tmp_path: Path, two_lats: tuple[str, str], mute: str
) -> None:
    pa, _ = two_lats
    silent = _result(cli, tmp_path, "gain", pa, mute)
    assert np.array_equal(silent, np.zeros_like(silent))
    # A value that looks negative still belongs to the option before it.
    _ok(cli("gain", pa, "--lufs", "-14", "-o", str(tmp_path / "loud.lat")))


def test_info_shows_mix_gains_and_polarity_flips(
    cli: Run, tmp_path: Path, two_lats: tuple[str, str]
) -> None:
    pa, pb = two_lats

    def operations(*args: str) -> str:
        out = tmp_path / "shown.lat"
        _ok(cli(*args, "-o", str(out), "--force"))
        (document,) = json.loads(_ok(cli("info", str(out), "--json")).stdout)["files"]
        return document["operations"]

    assert operations("mix", pa, pb, "--gains", "0,-6") == "mix(a.lat, b.lat -6.00 dB)"
    assert operations("mix", pa, pb, "--gains", "x-1,-inf") == (
        "mix(a.lat polarity flip, b.lat -inf dB)"
    )
    assert operations("gain", pa, "x-1").endswith("-> gain(polarity flip)")
    assert operations("gain", pa, "x-0.5").endswith("-> gain(-6.02 dB, polarity flip)")
    assert operations("gain", pa, "-6").endswith("-> gain(-6.00 dB)")
    assert operations("subtract", pa, pb) == "subtract(a.lat, b.lat)"


# -- usage errors, help texts that say what the code does ----------------------------------


def test_mix_with_one_input_is_a_usage_error(cli: Run, two_lats: tuple[str, str]) -> None:
    pa, _ = two_lats
    result = cli("mix", pa, "-o", str(Path(pa).with_name("one.lat")))
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stderr.strip() == "lincae: error: mix needs at least two input files"
    assert not Path(pa).with_name("one.lat").exists()
    # Other errors keep exit code 1.
    assert cli("mix", pa, pa + ".missing", "-o", str(Path(pa).with_name("x.lat"))).exit_code == 1
    alone = cli("subtract", pa, "-o", str(Path(pa).with_name("rest.lat")))
    assert alone.exit_code == 2, (alone.exit_code, alone.stderr)
    assert alone.stderr.strip().startswith("lincae: error: subtract needs a mix and at least one")


def _option(command: str, name: str) -> Any:
    import typer

    from lincae_cli.cli.app import app

    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return next(param for param in click_command.params if param.name == name)


def test_eval_precision_help_names_its_default(cli: Run) -> None:
    precision = _option("eval", "precision")
    assert precision.default == "fp32"
    assert precision.help.startswith("fp32 (the default:")
    assert "[default: fp32]" in " ".join(_ok(cli("eval", "--help")).stdout.split())


def test_train_help_and_readme_install_tensorboard_the_same_way(cli: Run) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    install = "pip install 'lincae[tensorboard]'"
    assert install in readme
    help_text = " ".join(_ok(cli("train", "--help")).stdout.split())
    assert install in help_text
    assert "pip install tensorboard" not in help_text


# -- binary data never goes to a terminal (like gzip) ---------------------------------------


def _run_on_a_terminal(args: list[str], stdin_path: Path | None = None) -> tuple[int, bytes, str]:
    """Run ``lincae ARGS`` with stdout on a pseudo-terminal: (exit code, what reached the
    terminal, stderr)."""
    import os
    import pty
    import select
    import subprocess
    import sys

    main_fd, terminal_fd = pty.openpty()
    stdin = stdin_path.open("rb") if stdin_path is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "lincae_cli.cli.app", *args],
            stdin=stdin,
            stdout=terminal_fd,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(terminal_fd)
    shown = b""
    while True:  # drain the terminal as the command runs, so it never blocks on a full one
        ready, _, _ = select.select([main_fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # the command closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(main_fd)
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    code = process.wait(timeout=120)
    if stdin_path is not None:
        stdin.close()  # type: ignore[union-attr]
    return code, shown, stderr


@pytest.mark.parametrize("command", ["encode", "encode-stdin", "decode", "gain", "mix", "subtract"])
def test_binary_output_is_refused_on_a_terminal(
    command: str, tmp_path: Path, two_lats: tuple[str, str], tiny_model_path: Path
) -> None:
    pa, pb = two_lats
    wav = tmp_path / "a.wav"
    model = ["--model", str(tiny_model_path), "--precision", "fp32"]
    args, stdin_path = {
        "encode": (["encode", str(wav), "-o", "-", *model], None),
        "encode-stdin": (["encode", "-", *model], wav),  # stdin's output is stdout by default
        "decode": (["decode", pa, "-o", "-", *model], None),
        "gain": (["gain", pa, "-6", "-o", "-"], None),
        "mix": (["mix", pa, pb, "-o", "-"], None),
        "subtract": (["subtract", pa, pb, "-o", "-"], None),
    }[command]
    code, shown, stderr = _run_on_a_terminal(args, stdin_path)
    assert code == 1, stderr
    assert shown == b""
    assert stderr == (
        "lincae: error: refusing to write binary data to a terminal (use -o FILE or a pipe)\n"
    )


@pytest.mark.parametrize(
    "options", [["--normalize"], ["-r", "22050"], ["--subtype", "PCM_24", "--limit"]]
)
def test_decoding_options_are_refused_for_a_latent_output(
    cli: Run, two_lats: tuple[str, str], options: list[str]
) -> None:
    pa, _ = two_lats
    target = Path(pa).with_name("louder.lat")
    result = cli("gain", pa, "+3", "-o", str(target), *options)
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "only apply when decoding to audio" in lines[0], lines
    assert not target.exists()


# -- misspelt options, options that do nothing -----------------------------------------------


@pytest.mark.parametrize(
    "command", [["gain", "IN", "+3"], ["gain", "IN", "-6dB"], ["mix", "IN", "IN"], ["decode", "IN"]]
)
def test_a_misspelt_option_is_named_as_such(
    cli: Run, two_lats: tuple[str, str], command: list[str]
) -> None:
    pa, _ = two_lats
    target = Path(pa).with_name("out.lat")
    args = [pa if word == "IN" else word for word in command]
    result = cli(*args, "--forse", "-o", str(target))
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "No such option: --forse" in result.stderr
    assert "extra argument" not in result.stderr
    assert not target.exists()
    # A short option that is not a number is an option too.
    assert "No such option: -x" in cli(*args, "-x", "-o", str(target)).stderr


def test_encode_takes_no_seed_and_decoding_commands_do(cli: Run, tmp_path: Path) -> None:
    write_tone(tmp_path / "a.wav", 0.2)
    result = cli("encode", str(tmp_path / "a.wav"), "--seed", "3")
    assert result.exit_code == 2 and "No such option: --seed" in result.stderr
    assert not (tmp_path / "a.lat").exists()
    assert "--seed" not in _ok(cli("encode", "--help")).stdout
    for command in ("decode", "mix", "gain", "subtract"):
        assert "--seed" in _ok(cli(command, "--help")).stdout, command


def test_the_mix_pad_example_overlays_rather_than_joins(cli: Run) -> None:
    help_text = " ".join(_ok(cli("mix", "--help")).stdout.split())
    assert "joined" not in help_text
    assert "--pad -o song-with-jingle.lat (jingle over the start)" in help_text


# -- mono among stereo: upmixed and shown by info --------------------------------------------


def test_mix_and_subtract_upmix_a_mono_input(cli: Run, tmp_path: Path) -> None:
    write_tone(tmp_path / "mono.wav", 0.6, seed=1)
    write_tone(tmp_path / "stereo.wav", 0.6, channels=2, seed=2)
    _ok(cli("encode", str(tmp_path / "mono.wav"), str(tmp_path / "stereo.wav"), model=True))
    mono, stereo = str(tmp_path / "mono.lat"), str(tmp_path / "stereo.lat")
    m, s = (np.asarray(read_lat(path).latents) for path in (mono, stereo))
    both_sides = np.concatenate([m, m])
    for args, expected, shown in [
        (["mix", stereo, mono], s + both_sides, "mix(stereo.lat, upmix(mono.lat, 1→2))"),
        (
            ["subtract", stereo, mono],
            s - both_sides,
            "subtract(stereo.lat, upmix(mono.lat, 1→2))",
        ),
        (
            ["mix", mono, stereo, "--gains", "-6,0"],
            both_sides * 10 ** (-6 / 20) + s,
            "mix(upmix(mono.lat, 1→2) -6.00 dB, stereo.lat)",
        ),
    ]:
        out = tmp_path / "out.lat"
        _ok(cli(*args, "-o", str(out), "--dtype", "float32", "--force"))
        result = read_lat(out)
        assert result.channels == 2
        np.testing.assert_allclose(np.asarray(result.latents), expected, rtol=1e-6, atol=1e-6)
        assert operations(result) == shown  # the operations line of `lincae info`
    # Decoding the upmixed result gives stereo audio.
    _ok(cli("mix", stereo, mono, "-o", str(tmp_path / "both.wav"), model=True))
    assert soundfile.info(tmp_path / "both.wav").channels == 2


# -- -n (null output) and -V, before or after the command ------------------------------------


def _null_run(cli: Run, tmp_path: Path, *args: str, model: bool = False) -> dict[str, Any]:
    before = sorted(tmp_path.rglob("*"))
    document = json.loads(_ok(cli(*args, "--json", model=model)).stdout)
    assert sorted(tmp_path.rglob("*")) == before, "-n wrote a file"
    return document


def test_null_output_does_the_work_and_writes_nothing(cli: Run, tmp_path: Path) -> None:
    wav = write_tone(tmp_path / "a.wav", 0.6, seed=1)
    write_tone(tmp_path / "b.wav", 0.6, seed=2)
    _ok(cli("encode", str(wav), str(tmp_path / "b.wav"), model=True))
    pa, pb = str(tmp_path / "a.lat"), str(tmp_path / "b.lat")
    frames = read_lat(pa).frames
    # Existing outputs do not matter: nothing is written.
    for args in (["encode", str(wav), "-n"], ["-n", "encode", str(wav)]):
        (record,) = _null_run(cli, tmp_path, *args, model=True)["files"]
        assert (record["status"], record["output"], record["frames"]) == ("ok", "<null>", frames)
    for args in (["decode", pa, "-n"], ["-n", "decode", pa]):
        (record,) = _null_run(cli, tmp_path, *args, model=True)["files"]
        assert (record["status"], record["output"]) == ("ok", "<null>")
        assert record["channels"] == 1 and record["peak"] > 0
    for args in (["mix", pa, pb], ["gain", pa, "-6"], ["subtract", pa, pb]):
        for null_args in ([*args, "-n"], ["-n", *args]):
            (record,) = _null_run(cli, tmp_path, *null_args)["files"]
            assert (record["status"], record["output"]) == ("ok", "<null>")
            assert record["frames"] == frames


def test_null_output_refuses_an_output_or_a_command_without_it(cli: Run, tmp_path: Path) -> None:
    wav = write_tone(tmp_path / "a.wav", 0.2)
    for args in (
        ["encode", str(wav), "-n", "-o", str(tmp_path / "a.lat")],
        ["-n", "gain", str(tmp_path / "a.lat"), "-6", "-o", str(tmp_path / "b.lat")],
    ):
        result = cli(*args)
        assert result.exit_code == 2, (result.exit_code, result.stderr)
        assert "-n writes nothing, so -o" in result.stderr
    result = cli("-n", "info", str(tmp_path / "a.lat"))
    assert result.exit_code == 2 and "-n (null output) applies to encode" in result.stderr
    no_output = cli("gain", str(tmp_path / "a.lat"), "-6")
    assert no_output.exit_code == 2 and "give -o OUT" in no_output.stderr
    assert list(tmp_path.iterdir()) == [wav]


@pytest.mark.parametrize("flag", ["-V", "--verbose"])
@pytest.mark.parametrize("before", [True, False])
def test_verbose_goes_before_or_after_the_command(
    cli: Run, tmp_path: Path, flag: str, before: bool
) -> None:
    from lincae_cli.errors import LincaeError

    command = ["gain", str(tmp_path / "missing.lat"), "-6", "-o", str(tmp_path / "x.wav")]
    result = cli(flag, *command) if before else cli(*command, flag)
    assert isinstance(result.exception, LincaeError), (result.exit_code, result.stderr)
    quiet = cli(*command)
    assert quiet.exit_code == 1 and not isinstance(quiet.exception, LincaeError)
    assert flag in _ok(cli("info", "--help")).stdout


# -- values are converted as click converts them, without pydantic ------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["encode", "x.wav", "--batch-size", "0"], "'--batch-size': 0 is below the minimum, 1"),
        (["encode", "x.wav", "--batch-size", "2.5"], "'--batch-size': '2.5' is not an integer"),
        (["encode", "x.wav", "--chunk-seconds", "0.01"], "0.01 is below the minimum, 0.1"),
        (["gain", "x.lat", "--lufs", "loud"], "'--lufs': 'loud' is not a number"),
    ],
)
def test_bad_values_are_usage_errors(cli: Run, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert message in " ".join(result.stderr.split()), result.stderr


def test_plain_parameters_convert_like_click_and_others_keep_typer() -> None:
    """lincae_cli.cli.coercion: ints, floats, paths, lists and flags (tri-state too) come out
    typed; a parameter with a parser keeps Typer's own conversion."""
    from typer.testing import CliRunner

    from lincae_cli.cli.commands import Command

    seen: dict[str, Any] = {}
    app = typer.Typer(add_completion=False)

    @app.command(cls=Command)
    def probe(
        paths: list[Path],
        count: Annotated[int, typer.Option(min=1, max=8)] = 2,
        level: float | None = None,
        where: Path | None = None,
        affine: Annotated[bool | None, typer.Option("--affine/--no-affine")] = None,
        parsed: Annotated[str, typer.Option(parser=lambda text: text.upper())] = "x",
    ) -> None:
        seen.update(locals())

    runner = CliRunner()
    args = ["a", "b/c", "--count", "8", "--level", "-inf", "--where", "d", "--no-affine"]
    assert runner.invoke(app, [*args, "--parsed", "four"]).exit_code == 0
    assert seen["paths"] == [Path("a"), Path("b/c")] and seen["count"] == 8
    assert seen["level"] == float("-inf") and seen["where"] == Path("d")
    assert seen["affine"] is False and seen["parsed"] == "FOUR"
    assert runner.invoke(app, ["a"]).exit_code == 0
    assert seen["count"] == 2 and seen["level"] is None and seen["affine"] is None
    assert seen["parsed"] == "X"
    too_many = runner.invoke(app, ["a", "--count", "9"])
    assert too_many.exit_code == 2 and "9 is above the maximum, 8" in too_many.stderr
