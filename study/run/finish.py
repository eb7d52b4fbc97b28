"""A study's outputs, rebuilt from its trial log: the table, the plots and the report, the MLflow records
still waiting, the parent run's outputs and the registry aliases of the front. `launch` ends with it;
`study report` runs it on its own."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from study.record.results import front, hypervolume_after, write_outputs
from study.record.schema import STATUSES
from study.record.store import StudyFolder, TrialLog
from study.record.study_record import StudyRecord
from study.record.sync import RecordSync, synced_runs
from study.record.tracking import open_tracker

RECORDS_DEADLINE_S = float(os.environ.get("NERF_STUDY_RECORDS_DEADLINE_S", "60"))
"""How long a finishing study waits for a tracking server that does not answer before it leaves the
waiting records to `study report` ($NERF_STUDY_RECORDS_DEADLINE_S)."""


def finish_outputs(
    folder: StudyFolder,
    record: StudyRecord,
    sync: RecordSync,
    *,
    parent_status: str | None,
    echo: Callable[[str], None],
    deadline_s: float | None = None,
) -> tuple[float | None, int]:
    """Rebuild the table, plots and report from the log, write the waiting MLflow records (bounded by a
    deadline when the server does not answer), the parent run's outputs and the registry of the front;
    returns (hypervolume, records still waiting)."""
    waiting = sync.drain(deadline_s=RECORDS_DEADLINE_S if deadline_s is None else deadline_s)
    rows = TrialLog(folder).rows()
    paths, hypervolume = write_outputs(folder, rows, record, synced_runs(folder))
    if waiting:
        echo(
            f"{waiting} MLflow record(s) are still waiting for {sync.tracker.uri}; they are kept on disk and "
            f"`study report {folder.path}` writes them once it answers"
        )
        return hypervolume, waiting
    reference = record.reference_point
    try:
        sync.tracker.log_study_outputs(
            paths,
            {s.lower(): sum(r["status"] == s for r in rows) for s in STATUSES},
            hypervolume_after(rows, reference) if reference else [],
        )
        aliases = sync.tracker.register_front(record.name, front(rows), synced_runs(folder))
        if aliases:
            echo(
                f"registered model {record.name!r}: "
                + ", ".join(f"{alias} = version {version}" for alias, version in aliases.items())
            )
        if parent_status is not None:
            sync.tracker.finish(parent_status)
    except Exception as exc:  # the server went away between the records and the outputs
        echo(
            f"MLflow did not take the study's outputs ({exc.__class__.__name__}); `study report {folder.path}` "
            f"logs them again"
        )
    return hypervolume, 0


@dataclass
class Report:
    rows: list[dict]
    hypervolume: float | None
    waiting: int
    """MLflow records still waiting for the tracking server."""
    repeats_avoided: int


def report_study(folder: StudyFolder, *, echo: Callable[[str], None]) -> Report:
    """`study report`: under the folder's lock (a running driver writes its own outputs), cut off what a
    kill left half-written, write the MLflow records still waiting and rebuild every output."""
    StudyRecord.load(folder)  # refuse a folder that is no study before the lock would touch it
    with folder.lock():
        record = StudyRecord.load(folder)
        folder.repair_logs(echo)
        sync = RecordSync(folder, open_tracker(folder, record), echo=echo)
        hypervolume, waiting = finish_outputs(
            folder,
            record,
            sync,
            echo=echo,
            parent_status="FINISHED" if record.status == "finished" else None,
        )
    return Report(TrialLog(folder).rows(), hypervolume, waiting, record.search.repeats_avoided)
