"""`livedrag models list|add|check`: the table, adding with conversion, refusals and exit codes."""

from __future__ import annotations

from pathlib import Path

from server.cli import main as cli_main
from server.models import ModelCard
from tests.models.helpers import write_generator, write_nvidia_pickle, write_predictor


def test_list_shows_the_default_without_a_library(capsys) -> None:
    """`models list` with no folder shows the embedded model, ok."""
    assert cli_main(["models", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "RES", "MODES", "LICENCE", "SOURCE", "STATUS"]
    assert out[1].startswith("synthfaces (default)") and " ok" in out[1] and "MIT" in out[1]


def test_add_list_check_and_refusals(tmp_path: Path, capsys) -> None:
    """add converts a pickle and copies a native file with its predictor; list and check report them;
    a foreign predictor and an existing name are refused with exit 2; a broken entry fails check."""
    lib = str(tmp_path / "lib")
    g, G = write_generator(tmp_path / "g.safetensors", seed=0)
    other, _ = write_generator(tmp_path / "other.safetensors", seed=1)
    pred = write_predictor(tmp_path / "p.safetensors", G)
    pkl = write_nvidia_pickle(tmp_path / "nv.pkl", G, tmp_path / "MARKER")

    assert cli_main(["models", "add", str(pkl), "--models", lib, "--name", "nv", "--licence", "NC"]) == 0
    assert "added nv" in capsys.readouterr().out
    argv = ["models", "add", str(g), "--models", lib, "--name", "mine", "--predictor", str(pred)]
    assert cli_main(argv) == 0
    assert "modes optimize, predict" in capsys.readouterr().out

    assert (
        cli_main(["models", "add", str(other), "--models", lib, "--name", "bad", "--predictor", str(pred)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("livedrag models: error: refusing the predictor for model 'bad'")
    assert len(err.strip().splitlines()) == 1 and "other weights" in err
    assert cli_main(["models", "add", str(other), "--models", lib, "--name", "mine"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err

    assert cli_main(["models", "list", "--models", lib]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[0] for r in rows[1:]] == ["synthfaces", "mine", "nv"]
    assert "optimize,predict" in rows[2] and rows[2].rstrip().endswith("ok")
    assert "NC" in rows[3] and "nv.pkl" in rows[3]

    assert cli_main(["models", "check", "--models", lib]) == 0
    out = capsys.readouterr().out
    assert "mine: ok (optimize, predict)" in out and "nv: ok (optimize)" in out

    # The generator swapped for another one: the predictor no longer belongs to it.
    (tmp_path / "lib" / "mine" / "generator.safetensors").write_bytes(other.read_bytes())
    assert cli_main(["models", "check", "--models", lib, "mine"]) == 2
    out = capsys.readouterr().out
    assert "mine: FAILED" in out and "predictor.safetensors" in out and "1 of 1 models failed" in out
    assert cli_main(["models", "check", "--models", lib, "nv"]) == 0
    capsys.readouterr()
    assert cli_main(["models", "list", "--models", lib]) == 0
    cap = capsys.readouterr()
    assert "error" in cap.out and "model mine:" in cap.err  # the table on stdout, its reasons on stderr
    assert ModelCard.load(tmp_path / "lib" / "nv").licence == "NC"
    assert not (tmp_path / "MARKER").exists()


def test_check_unknown_name_is_one_line(tmp_path: Path, capsys) -> None:
    """An unknown model is a one-line error with exit 2."""
    assert cli_main(["models", "check", "--models", str(tmp_path), "nope"]) == 2
    assert "no model named 'nope'" in capsys.readouterr().err
