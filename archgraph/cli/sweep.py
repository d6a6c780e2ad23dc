"""archgraph sweep RUN.yaml --param KEY=DIST:ARGS... --trials N --out DIR [--seeds 0,1,2] [--jobs J] [--storage URL]
[--study NAME] [--set KEY=VALUE] [--data-root PATH] [--device cpu|cuda|auto] [--no-progress]"""
from __future__ import annotations

import importlib.util
import sys

from ..errors import ConfigError
from .args import command, run_file_argument, settings_argument, training_arguments


def register(sub) -> None:
    p = command(sub, "sweep", run, help="multi-objective search of run-file settings: the accuracy/size Pareto front",
                description="Search the run-file fields given by --param with Optuna's multi-objective "
                            "TPE sampler for the Pareto front of validation accuracy (maximised) against "
                            "non-zero parameters (minimised). Every trial runs the run file once per seed "
                            "(schedule.seed) into DIR/trials/NNNN/seed-S; its objectives are the medians "
                            "over the seeds. The study is stored in DIR/study.db (SQLite), so a killed "
                            "sweep continues when the same command runs again (finished trials count "
                            "towards N, failed or interrupted ones do not). At the end DIR/pareto.md, "
                            "DIR/pareto.json and DIR/pareto.png hold the front, with its members' test "
                            "accuracy read from their summary.json. Needs optuna "
                            "(pip install 'archgraph[sweep]').",
                epilog="DIST is loguniform:LO:HI, uniform:LO:HI, int:LO:HI (inclusive) or choice:A,B,... "
                       "(values read as YAML scalars). Example: archgraph sweep examples/digits_gnap.yaml "
                       "--param method.param_cost=loguniform:0.0005:0.05 --param "
                       "method.grow_init=choice:preserve,net2net --trials 20 --seeds 0,1,2 --jobs 2 "
                       "--out runs/sweep")
    run_file_argument(p, "the run file whose grow runs are the trials (its settings are the defaults)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=DIST:ARGS", required=True,
                   help="a searched field by dotted name, e.g. method.param_cost=loguniform:0.0005:0.05 "
                        "(repeatable)")
    p.add_argument("--trials", type=int, required=True, metavar="N",
                   help="complete trials the study should have (a resumed sweep counts those it has)")
    p.add_argument("--seeds", default="0", metavar="S,S,...",
                   help="seeds every trial runs, its objectives being the medians (default 0)")
    p.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="trials in parallel, each in its own process (default 1; with J > 1 set "
                        "schedule.threads so J runs fit the cores)")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep directory: study.db, trials/, pareto.*")
    p.add_argument("--storage", metavar="URL",
                   help="an Optuna RDB storage URL (e.g. postgresql://host/db) shared by several machines, "
                        "instead of DIR/study.db")
    p.add_argument("--launcher", metavar="COMMAND",
                   help="run each trial's grow runs as jobs of this launcher, e.g. \"torchrun --nproc_per_node=2\" "
                        "(several processes per trial, DDP or FSDP as the run file says)")
    p.add_argument("--study", metavar="NAME", help="study name in the storage (default: the run file's stem)")
    settings_argument(p, "fix a run-file field for every trial, e.g. --set schedule.epochs=20 (repeatable)")
    training_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no overall progress bar (the per-trial lines stay)")


def run(args) -> int:
    from ..sweep import parse_params, parse_seeds, plan
    from .grow import parse_settings
    spec = plan(args.run_file, args.out, parse_params(args.param), trials=args.trials,
                seeds=parse_seeds(args.seeds), jobs=args.jobs, storage=args.storage, study_name=args.study,
                settings=parse_settings(args.set), data_root=args.data_root, device=args.device,
                launcher=args.launcher)
    if importlib.util.find_spec("optuna") is None:
        raise ConfigError("archgraph sweep needs optuna: pip install 'archgraph[sweep]' (or pip install optuna)")
    from ..sweep.runner import TrialFailed, run_sweep
    try:
        data = run_sweep(spec, progress=not args.no_progress)
    except TrialFailed as err:
        print(f"archgraph: error: {' '.join(str(err).split())}", file=sys.stderr)
        return err.code
    out = args.out.rstrip("/") or "/"
    print(f"{len(data['front'])} of {data['trials_complete']} complete trials on the Pareto front -> "
          f"{out}/pareto.md, {out}/pareto.json, {out}/pareto.png")
    return 0
