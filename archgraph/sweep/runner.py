"""Running a sweep: an Optuna study in an RDB storage, trials of ``grow`` runs in this process or in spawned
worker processes, one trial at a time per worker, until the study has N complete trials.

Counting: a worker starts a trial only while (complete + running) < N, and a trial that finds N complete or running
trials numbered below it when it starts gives way (state PRUNED, nothing run), so parallel workers, also on several
machines sharing ``--storage``, end with exactly N complete trials. A trial that fails or whose sweep is killed is
not counted: with the default storage (``DIR/study.db``, one sweep per DIR) a new sweep marks the trials left
running as failed before it starts; with a shared storage Optuna's heartbeat fails them after :data:`GRACE_S`
and enqueues the failed trial's parameters again (Optuna's ``RetryHeartbeatStaleTrialCallback``, at most
:data:`MAX_RETRY` times), so the next free worker reruns them. ``ARCHGRAPH_SWEEP_HEARTBEAT_S`` and
``ARCHGRAPH_SWEEP_GRACE_S`` (positive seconds) replace the heartbeat interval and the grace period.
"""
from __future__ import annotations

import json
import os
import queue
import shlex
import statistics
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

from ..errors import ArchgraphError, ConfigError, TrialFailed
from ..train import grow
from .front import _shown_url, read_trials, write_front
from .space import Param

if TYPE_CHECKING:   # optuna is imported where a sweep runs (reading and checking a sweep needs none)
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event

    import optuna

DIRECTIONS: tuple[Literal["maximize"], Literal["minimize"]] = ("maximize", "minimize")   # val accuracy, non-zero params
HEARTBEAT_S = 15
GRACE_S = 60
MAX_RETRY = 3        # reruns of the parameters of a trial whose worker died (heartbeat stale)
POLL_S = 1.0


@dataclass(frozen=True)
class SweepSpec:
    """Everything a worker needs (picklable, for spawned processes)."""
    run_file: str                 # absolute
    out_dir: str                  # absolute
    params: tuple[Param, ...]
    trials: int
    seeds: tuple[int, ...] = (0,)
    jobs: int = 1
    storage: Optional[str] = None     # None: sqlite:///DIR/study.db
    study_name: str = "sweep"
    settings: dict = field(default_factory=dict)
    data_root: Optional[str] = None
    device: Optional[str] = None
    launcher: Optional[str] = None    # e.g. "torchrun --nproc_per_node=2": each seed's run is such a job

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out_dir, 'study.db')}"

    @property
    def identity(self) -> dict:
        """What a resumed sweep must share with the one that made the study."""
        return {"run_file": Path(self.run_file).name, "params": {p.key: p.spec for p in self.params},
                "seeds": list(self.seeds), "settings": {k: self.settings[k] for k in sorted(self.settings)}}


# ---- the study --------------------------------------------------------------------------------------------------

def _quiet_optuna() -> None:
    import warnings

    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _seconds_from_env(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``name``, else ``default``.

    >>> _seconds_from_env("ARCHGRAPH_SWEEP_NOT_SET", 15)
    15
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise ConfigError(f"{name}={text!r} is not a positive number of seconds")
    return int(value) if value.is_integer() else value


def heartbeat_settings() -> tuple[float, float]:
    """(heartbeat interval, grace period) in seconds: :data:`HEARTBEAT_S` and :data:`GRACE_S` unless
    ``ARCHGRAPH_SWEEP_HEARTBEAT_S`` / ``ARCHGRAPH_SWEEP_GRACE_S`` say otherwise; the grace period must exceed the
    interval, or live trials would be failed between two beats."""
    beat = _seconds_from_env("ARCHGRAPH_SWEEP_HEARTBEAT_S", HEARTBEAT_S)
    grace = _seconds_from_env("ARCHGRAPH_SWEEP_GRACE_S", GRACE_S)
    if grace <= beat:
        raise ConfigError(f"the sweep's grace period ({grace} s, ARCHGRAPH_SWEEP_GRACE_S) must be longer than its "
                          f"heartbeat interval ({beat} s, ARCHGRAPH_SWEEP_HEARTBEAT_S)")
    return beat, grace


def _retry_stale_trials() -> dict:
    """RDBStorage's argument that reruns a stale trial's parameters (its name changed in optuna 4.9)."""
    import inspect

    import optuna.storages as storages
    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    names = inspect.signature(storages.RDBStorage.__init__).parameters
    key = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in names else "failed_trial_callback"
    return {key: retry(max_retry=MAX_RETRY)}


def open_study(spec: SweepSpec, create: bool = False) -> optuna.Study:
    import optuna
    _quiet_optuna()
    url = spec.storage_url
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    beat, grace = heartbeat_settings()
    for attempt in range(5):
        try:
            # optuna annotates both as int but uses them as seconds of any kind (the tests beat every 0.5 s)
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                                 heartbeat_interval=beat,  # type: ignore[arg-type]
                                                 grace_period=grace,  # type: ignore[arg-type]
                                                 **_retry_stale_trials())
            break
        except Exception as err:   # sqlalchemy: unknown dialect, bad URL, unreachable server
            # two machines creating the tables of a fresh database at once: one loses the race (IntegrityError,
            # e.g. PostgreSQL's CREATE TYPE) and finds the tables made when it tries again
            if type(err).__name__ == "IntegrityError" and attempt < 4:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise ConfigError(f"cannot open the study storage {_shown_url(url)}: {type(err).__name__}: "
                              f"{err}") from None
    sampler = optuna.samplers.TPESampler(multivariate=True, constant_liar=True)
    if create:
        study = optuna.create_study(storage=storage, study_name=spec.study_name, directions=list(DIRECTIONS),
                                    sampler=sampler, load_if_exists=True)
    else:
        study = optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler)
    if [d.name.lower() for d in study.directions] != list(DIRECTIONS):
        raise ConfigError(f"study '{spec.study_name}' in {_shown_url(url)} is not an archgraph sweep (its "
                          f"directions are {[d.name.lower() for d in study.directions]})")
    return study


def _counts(study: optuna.Study) -> tuple[int, int]:
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    return complete, len(trials) - complete


def prepare(spec: SweepSpec) -> tuple[Any, int, int]:
    """Create or reopen the study, check it belongs to this sweep, fail trials a killed sweep left running (default
    storage only). Returns (study, complete trials, trials marked failed)."""
    from optuna.trial import TrialState
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    study = open_study(spec, create=True)
    mine = spec.identity
    try:
        theirs = study.user_attrs.get("archgraph_sweep")
    except ValueError as err:   # a user attribute that is not JSON: the study was edited
        raise ConfigError(f"study '{spec.study_name}' in {_shown_url(spec.storage_url)} holds an attribute that "
                          f"is not JSON ({err}); was it edited?") from None
    if theirs is not None and not isinstance(theirs, dict):
        raise ConfigError(f"study '{spec.study_name}' in {_shown_url(spec.storage_url)} has an archgraph_sweep "
                          f"attribute that is not what archgraph sweep writes ({str(theirs)[:60]!r})")
    existing = read_trials(study, spec)   # every trial's attributes read back once: an edited one is named here
    if theirs is None:
        if existing:
            raise ConfigError(f"study '{spec.study_name}' in {_shown_url(spec.storage_url)} was not made by "
                              "archgraph sweep; use another --study or --out")
        trials_dir = Path(spec.out_dir, "trials")
        if trials_dir.is_dir() and any(trials_dir.iterdir()):
            raise ConfigError(f"{trials_dir} holds the runs of another study; use a new --out")
        study.set_user_attr("archgraph_sweep", mine)
    else:
        for what in ("run_file", "params", "seeds", "settings"):
            if theirs.get(what) != mine[what]:
                raise ConfigError(f"study '{spec.study_name}' in {_shown_url(spec.storage_url)} was made with "
                                  f"{what} {theirs.get(what)!r}, this command has {mine[what]!r}; a resumed "
                                  "sweep must repeat the command (use a new --out or --study for another sweep)")
    failed = 0
    if spec.storage is None:   # DIR/study.db belongs to this sweep: whatever still runs was killed
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed += 1
    return study, _counts(study)[0], failed


# ---- one worker -------------------------------------------------------------------------------------------------

def _objective(spec: SweepSpec, study: optuna.Study, trial: optuna.Trial, box: dict) -> tuple[float, float]:
    import optuna
    from optuna.trial import TrialState
    box["number"] = trial.number
    earlier = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
               if t.number < trial.number]
    if len(earlier) >= spec.trials:   # another worker started the last trial first
        trial.set_user_attr("skipped", f"the study already had {spec.trials} complete or running trials")
        raise optuna.TrialPruned()
    values = {p.key: p.suggest(trial) for p in spec.params}
    folder = Path(spec.out_dir, "trials", f"{trial.number:04d}")
    box["folder"] = folder
    t0 = time.perf_counter()
    results = []
    for seed in spec.seeds:
        run = folder / f"seed-{seed}"
        settings = {**spec.settings, **values, "schedule.seed": seed}
        if spec.launcher:
            summary = launched_grow(spec, run, settings)
        else:
            summary = grow(spec.run_file, run, data_root=spec.data_root, device=spec.device, quiet=True,
                           settings=settings)
        if summary.get("val_acc") is None:
            raise ConfigError("the run has no validation accuracy (data.val_fraction is 0), which the sweep "
                              "maximises", file=spec.run_file, field="data.val_fraction")
        record = {"seed": seed, "val_acc": summary["val_acc"], "nonzero_params": summary["nonzero_params"],
                  "params": summary["params"], "macs": summary["macs"],
                  "nonzero_macs": summary.get("nonzero_macs"), "wall_s": summary["wall_s"],
                  "run": run.relative_to(spec.out_dir).as_posix()}
        trial.set_user_attr(f"seed-{seed}", record)
        results.append(record)
    wall = round(time.perf_counter() - t0, 3)
    trial.set_user_attr("wall_s", wall)
    box.update(results=results, wall_s=wall)
    return (statistics.median(r["val_acc"] for r in results),
            statistics.median(r["nonzero_params"] for r in results))


def launcher_command(launcher: str) -> list[str]:
    """The launcher's words; ``torchrun`` is this interpreter's (``python -m torch.distributed.run``), on a port of
    its own (``--standalone``) unless the launcher names a rendezvous, so parallel trials do not collide.

    >>> launcher_command("torchrun --nproc_per_node=2")[-2:]
    ['--standalone', '--nproc_per_node=2']
    """
    words = shlex.split(launcher)
    if words and words[0] == "torchrun":
        words = [sys.executable, "-m", "torch.distributed.run"] + (
            [] if any(w.startswith(("--standalone", "--master_port", "--rdzv_endpoint", "--rdzv-endpoint"))
                      for w in words) else ["--standalone"]) + words[1:]
    return words


def launched_grow(spec: SweepSpec, run: Path, settings: dict) -> dict:
    """One seed's run as a job of ``spec.launcher`` (``archgraph grow`` in every process it starts); its summary."""
    assert spec.launcher is not None   # the trial runs its seeds this way only with a launcher
    cmd = launcher_command(spec.launcher) + ["-m", "archgraph", "grow", spec.run_file, "--out", str(run), "--quiet"]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    if spec.data_root:
        cmd += ["--data-root", spec.data_root]
    if spec.device:
        cmd += ["--device", spec.device]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    summary = Path(run, "summary.json")
    if proc.returncode != 0 or not summary.exists():
        raise ArchgraphError(f"the launched run {run} failed (exit {proc.returncode}): "
                             f"{(proc.stderr or proc.stdout)[-1500:]}")
    return json.loads(summary.read_text())


def work(spec: SweepSpec, on_trial: Callable[[dict], None], should_stop: Callable[[], bool]) -> None:
    """Run trials until the study has ``spec.trials`` complete ones (or ``should_stop()``); ``on_trial`` gets a
    dict per finished trial. A failing trial raises :class:`TrialFailed` (the trial is marked failed)."""
    import optuna
    from optuna.trial import TrialState
    study = open_study(spec)
    while not should_stop():
        complete, running = _counts(study)
        if complete >= spec.trials:
            return
        if complete + running >= spec.trials:   # the last trials are running elsewhere: wait, they may fail
            time.sleep(POLL_S)
            optuna.storages.fail_stale_trials(study)
            continue
        box: dict = {}
        try:
            study.optimize(lambda trial: _objective(spec, study, trial, box), n_trials=1, catch=(),
                           gc_after_trial=False, show_progress_bar=False)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:
            number = box.get("number")
            where = f"trial {number:04d}" if number is not None else "a trial"
            if isinstance(err, ArchgraphError):
                raise TrialFailed(f"{where} failed: {err}", 2) from None
            text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            note = ""
            folder = box.get("folder")
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "error.txt").write_text(text)
                note = f" (traceback in {folder / 'error.txt'})"
            raise TrialFailed(f"{where} failed: {type(err).__name__}: {err}{note}", 1) from None
        if "results" in box:
            frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == box["number"])
            if frozen.state == TrialState.COMPLETE:
                on_trial({"number": frozen.number, "params": dict(frozen.params), "values": list(frozen.values),
                          "seeds": box["results"], "wall_s": box["wall_s"]})


def _watch_parent(parent: int) -> None:
    """End this worker at once when the sweep that spawned it is gone (killed), so no orphan keeps training."""
    def loop() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.5)
    threading.Thread(target=loop, name="archgraph-sweep-parent", daemon=True).start()


def _worker_main(spec: SweepSpec, messages: Queue, stop: Event, parent: int) -> None:
    _watch_parent(parent)
    try:
        work(spec, lambda info: messages.put({"kind": "trial", **info}), stop.is_set)
    except KeyboardInterrupt:
        pass
    except TrialFailed as err:
        stop.set()
        messages.put({"kind": "error", "message": str(err), "code": err.code})
    except ArchgraphError as err:
        stop.set()
        messages.put({"kind": "error", "message": str(err), "code": 2})
    except BaseException as err:
        stop.set()
        messages.put({"kind": "error", "message": f"a sweep worker failed: {type(err).__name__}: {err}",
                      "code": 1})
    finally:
        messages.put({"kind": "exit"})


def run_workers(spec: SweepSpec, on_trial: Callable[[dict], None]) -> None:
    """``spec.jobs`` spawned worker processes; returns when all have ended. Raises the first :class:`TrialFailed`."""
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    stop = ctx.Event()
    procs = [ctx.Process(target=_worker_main, args=(spec, messages, stop, os.getpid()), daemon=True,
                         name=f"archgraph-sweep-{i}") for i in range(spec.jobs)]
    for p in procs:
        p.start()
    failure: Optional[TrialFailed] = None
    exits = 0
    try:
        while exits < len(procs):
            try:
                msg = messages.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode is not None]
                if len(dead) == len(procs):   # every worker has ended, some without saying so (killed)
                    codes = [p.exitcode for p in dead if p.exitcode]
                    if codes and failure is None:
                        failure = TrialFailed(f"a sweep worker ended with exit status {codes[0]}", 1)
                    break
                continue
            if msg["kind"] == "trial":
                on_trial(msg)
            elif msg["kind"] == "error":
                failure = failure or TrialFailed(msg["message"], msg["code"])
            else:
                exits += 1
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=30)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    if failure is not None:
        raise failure


# ---- the whole sweep ---------------------------------------------------------------------------------------------

def _values_text(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def run_sweep(spec: SweepSpec, *, progress: bool = True) -> dict:
    """Run the sweep to ``spec.trials`` complete trials, then write the Pareto front; returns pareto.json's data."""
    from tqdm import tqdm
    study, done, failed = prepare(spec)
    say = lambda line: (tqdm.write(line, file=sys.stdout), sys.stdout.flush())   # noqa: E731
    if failed:
        say(f"marked {failed} trial(s) that a killed sweep left running as failed (not counted)")
    if done:
        say(f"resuming study '{spec.study_name}': {done} of {spec.trials} trials complete")
    if done < spec.trials:
        bar = tqdm(total=spec.trials, initial=done, desc="sweep", unit="trial", file=sys.stderr,
                   disable=not progress or not sys.stderr.isatty(), dynamic_ncols=True, leave=False)
        count = [done]

        def on_trial(info: dict) -> None:
            count[0] += 1
            val, nonzero = info["values"]
            n = len(info["seeds"])
            say(f"trial {info['number']:04d}: val_acc {val:.4f}, {nonzero:,.0f} non-zero params (median of {n} "
                f"seed{'s' if n > 1 else ''}), {info['wall_s']:.1f} s; {_values_text(info['params'])} "
                f"[{min(count[0], spec.trials)}/{spec.trials}]")
            bar.update(1)

        try:
            if spec.jobs == 1:
                work(spec, on_trial, lambda: False)
            else:
                run_workers(spec, on_trial)
        finally:
            bar.close()
    return write_front(study, spec)
