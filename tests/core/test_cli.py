"""``robot-rl``'s command line: KEY=VALUE overrides anywhere after the subcommand (issue 16, item 7)."""

import pytest

from robot_rl.cli import parse_args


@pytest.mark.parametrize("argv, overrides", [
    # the line: an override before, then an option, then one after
    (["train", "teacher.kind=remote", "--total-steps", "6000", "run.eval_episodes=2"],
     ["teacher.kind=remote", "run.eval_episodes=2"]),
    (["train", "--total-steps", "6000", "a.b=1", "--seed", "3", "c=2", "d=-1"], ["a.b=1", "c=2", "d=-1"]),
    (["train", "x=1", "--seed", "3", "x=2"], ["x=1", "x=2"]),  # order kept: the later one wins in load_config
])
def test_train_takes_overrides_anywhere(argv, overrides):
    args = parse_args(argv)
    assert args.overrides == overrides
    assert args.total_steps == 6000 or args.seed == 3


def test_every_subcommand_with_overrides_takes_them_anywhere(tmp_path):
    serve = parse_args(["teacher", "serve", "server.port=8001", "--backend", "scripted", "backend.task=T"])
    assert serve.overrides == ["server.port=8001", "backend.task=T"] and serve.backend == "scripted"
    ros2 = parse_args(["deploy", "ros2", "a=1", "--policy", str(tmp_path), "b=2", "--no-autostart", "c=3"])
    assert ros2.overrides == ["a=1", "b=2", "c=3"] and ros2.no_autostart
    bench = parse_args(["bench", "--tasks", "PushCube-v2", "a=1", "--seeds", "1", "b=2"])
    # the first KEY=VALUE fills bench's optional SPEC positional; _bench moves it back to the front of the overrides
    assert [str(bench.spec), *bench.overrides] == ["a=1", "b=2"] and bench.seeds == 1


def test_leftovers_that_are_not_overrides_are_still_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["train", "a=1", "--seed", "3", "--no-such-flag"])
    assert exit_.value.code == 2 and "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["train", "a=1", "--seed", "3", "word"])
    with pytest.raises(SystemExit):  # export takes no overrides
        parse_args(["export", "runs/r", "a=1"])
