import dataclasses
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

from common import cli
from common.errors import ConfigError, UserError


@dataclass
class Config:
    steps: int = cli.option(5, "training steps", check=cli.positive)
    lr: float = cli.option(1e-3, "learning rate", check=cli.positive)
    lrs: list[float] = cli.option([0.5, 1.0], "lr multipliers", check=cli.positive)
    kind: str = cli.option("a", "kind", choices=["a", "b"])
    lo: int = cli.option(1, "lower", check=cli.nonnegative)
    hi: int = cli.option(2, "upper")
    resume: bool = cli.option(False, "resume")

    def check(self) -> None:
        if self.lo > self.hi:
            raise ConfigError(f"--lo ({self.lo}) must not exceed --hi ({self.hi})")


def test_fields_are_the_options():
    cfg = cli.parse(Config, ["--lrs", "1", "2", "--resume", "--kind", "b"], prog="p")
    assert cfg == Config(lrs=[1.0, 2.0], resume=True, kind="b")
    text = cli.build_parser(Config, "p").format_help()
    for flag in ["--steps", "--lr", "--lrs", "--kind", "--resume", "learning rate"]:
        assert flag in text


@pytest.mark.parametrize("argv, flag", [
    (["--steps", "0"], "--steps"), (["--steps", "-5"], "--steps"), (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"), (["--lr", "-1"], "--lr"), (["--lrs", "1", "-1"], "--lrs"),
    (["--kind", "c"], "--kind"), (["--steps", "x"], "--steps"), (["--lo", "3"], "--lo"),
    (["--bogus"], "--bogus"),
])
def test_bad_values_are_one_line_and_exit_2(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse(Config, argv, prog="p")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("p: error:") and flag in err


def test_run_reports_user_errors_in_one_line_and_lets_bugs_through(capsys):
    def work(cfg):
        raise UserError("folder x holds files")

    with pytest.raises(SystemExit) as exc:
        cli.run(Config, work, [], prog="p")
    assert exc.value.code == 2 and capsys.readouterr().err == "p: error: folder x holds files\n"
    with pytest.raises(ZeroDivisionError):
        cli.run(Config, lambda cfg: 1 / 0, [], prog="p")
    assert cli.run(Config, lambda cfg: cfg.steps, ["--steps", "7"], prog="p") == 7


def test_a_real_process_prints_no_traceback(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from common import cli

        @dataclass
        class C:
            n: int = cli.option(1, "n", check=cli.positive)

        cli.run(C, print, prog="prog")
    """))
    res = subprocess.run([sys.executable, str(script), "--n", "0"], capture_output=True,
                         text=True)
    assert res.returncode == 2 and res.stderr == "prog: error: --n must be positive, got 0\n"


@dataclass
class WithExplicit:
    steps: int = cli.option(5, "steps", check=cli.positive)
    hidden: int = cli.option(32, "width", check=cli.positive)
    fast: bool = cli.option(False, "fast")
    explicit: frozenset = dataclasses.field(default=frozenset(), compare=False)


def test_a_config_can_tell_given_options_from_defaults():
    cfg = cli.parse(WithExplicit, ["--hidden", "32", "--no-fast"], prog="p")
    assert cfg.explicit == {"hidden", "fast"} and cfg.steps == 5
    assert cli.parse(WithExplicit, [], prog="p").explicit == frozenset()
