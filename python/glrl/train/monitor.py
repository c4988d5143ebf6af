"""What a training run shows and records: a progress bar, Caffe-style log lines, a CSV, PNG curves and
(when the ``tensorboard`` package is installed) TensorBoard event files.

The log lines carry glog's prefix and Caffe's own wording (``Iteration N (x iter/s, ...), loss = ...``,
``Iteration N, lr = ...``, ``Test net output #0: loss = ...``), so Caffe's ``tools/extra/parse_log.py`` and
habits built on Caffe logs work on glrl logs. The CSV has one row per display iteration and per test:
``iteration, lr, loss, seconds, test_loss, set5_psnr`` (empty cells where a value was not measured).
"""
from __future__ import annotations

import csv
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from glrl.fsutil import atomic_write_bytes, atomic_write_text

CSV_COLUMNS = ("iteration", "lr", "loss", "seconds", "test_loss", "set5_psnr")


@dataclass
class MetricRow:
    """One CSV row."""

    iteration: int
    lr: Optional[float] = None
    loss: Optional[float] = None
    seconds: Optional[float] = None
    test_loss: Optional[float] = None
    set5_psnr: Optional[float] = None

    def cells(self) -> List[str]:
        values = (self.iteration, self.lr, self.loss, self.seconds, self.test_loss, self.set5_psnr)
        return ["" if value is None else (str(value) if isinstance(value, int) else f"{value:.9g}")
                for value in values]


def _optional_float(text: str) -> Optional[float]:
    return float(text) if text != "" else None


class Monitor:
    """Records one run's progress in ``run_dir`` (``train.log``, ``metrics.csv``, ``curves.png``,
    ``tensorboard/``); only rank 0 of a distributed run makes one with ``enabled=True``."""

    def __init__(self, run_dir: Path, *, max_iter: int, start_iter: int = 0, enabled: bool = True,
                 progress: bool = True, tensorboard: bool = True, echo: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.echo = echo
        self.rows: List[MetricRow] = []
        self._bar = None
        self._log = None
        self._tensorboard = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "metrics.csv"
        self.png_path = self.run_dir / "curves.png"
        # Rows at ``start_iter`` and after were logged after the snapshot being resumed; the resumed run
        # logs them again (a Caffe solver tests and displays at the iteration it restores).
        self.rows = [row for row in self._read_csv() if row.iteration < start_iter]
        self._write_csv()
        self._log = open(self.run_dir / "train.log", "a", encoding="utf-8")
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=max_iter, initial=start_iter, unit="it", dynamic_ncols=True,
                             desc="train", disable=None)
        if tensorboard:
            self._tensorboard = _tensorboard_writer(self.run_dir / "tensorboard", start_iter)

    # -- log lines -------------------------------------------------------------------------------------------
    def log(self, message: str, *, error: bool = False) -> None:
        """A Caffe-style log line (glog prefix) to ``train.log`` and, beside the bar, to stderr; an ``error``
        line (``E``) goes to ``train.log`` only: the command prints the error itself."""
        if not self.enabled:
            return
        now = time.time()
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1e6):06d}"
        line = f"{'E' if error else 'I'}{stamp} {os.getpid():5d} solver.cpp:0] {message}"
        self._log.write(line + "\n")
        self._log.flush()
        if self.echo and not error:
            if self._bar is not None and not self._bar.disable:
                self._bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr, flush=True)

    # -- progress and metrics --------------------------------------------------------------------------------
    def advance(self, iteration: int, loss: float, lr: float) -> None:
        """Move the bar to ``iteration`` (completed iterations)."""
        if self._bar is not None:
            self._bar.update(iteration - self._bar.n)
            self._bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}", refresh=False)

    def record(self, row: MetricRow) -> None:
        """Append a CSV row (and TensorBoard scalars)."""
        if not self.enabled:
            return
        self.rows.append(row)
        with open(self.csv_path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(row.cells())
        if self._tensorboard is not None:
            for name in ("lr", "loss", "test_loss", "set5_psnr"):
                value = getattr(row, name)
                if value is not None:
                    self._tensorboard.add_scalar(name, value, row.iteration)
            self._tensorboard.flush()

    def plot(self, bicubic_psnr: Optional[float] = None) -> None:
        """Write ``curves.png``: training (and test) loss, and Set5 PSNR against bicubic when measured."""
        if not self.enabled or not self.rows:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        losses = [(r.iteration, r.loss) for r in self.rows if r.loss is not None]
        tests = [(r.iteration, r.test_loss) for r in self.rows if r.test_loss is not None]
        psnrs = [(r.iteration, r.set5_psnr) for r in self.rows if r.set5_psnr is not None]
        panels = 2 if psnrs else 1
        figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
        axis = axes[0][0]
        if losses:
            axis.plot(*zip(*losses), label="train loss (smoothed)")
        if tests:
            axis.plot(*zip(*tests), "o-", label="test loss")
        axis.set_xlabel("iteration")
        axis.set_ylabel("loss")
        if all(value > 0 for _, value in losses + tests):
            axis.set_yscale("log")
        axis.legend()
        axis.grid(True, alpha=0.3)
        if psnrs:
            axis = axes[0][1]
            axis.plot(*zip(*psnrs), "o-", label="Set5 PSNR")
            if bicubic_psnr is not None:
                axis.axhline(bicubic_psnr, color="gray", linestyle="--", label="bicubic")
            axis.set_xlabel("iteration")
            axis.set_ylabel("PSNR (dB)")
            axis.legend()
            axis.grid(True, alpha=0.3)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        atomic_write_bytes(self.png_path, buffer.getvalue())

    def close(self) -> None:
        """Close the bar, the log and TensorBoard."""
        if self._bar is not None:
            self._bar.close()
        if self._log is not None:
            self._log.close()
        if self._tensorboard is not None:
            self._tensorboard.close()

    # -- CSV on disk -----------------------------------------------------------------------------------------
    def _read_csv(self) -> List[MetricRow]:
        """The rows of an earlier run's CSV; a row cut short (the process killed, or the disk full, while it
        was appended) is dropped with a note, so that the run can still resume."""
        if not self.csv_path.is_file():
            return []
        rows, dropped = [], 0
        with open(self.csv_path, newline="", encoding="utf-8") as handle:
            for cells in csv.DictReader(handle):
                try:
                    rows.append(MetricRow(int(cells["iteration"]),
                                          *(_optional_float(cells[c]) for c in CSV_COLUMNS[1:])))
                except (KeyError, TypeError, ValueError):
                    dropped += 1
        if dropped:
            print(f"note: {self.csv_path}: dropped {dropped} unreadable row(s) (cut short by a kill?)",
                  file=sys.stderr)
        return rows

    def _write_csv(self) -> None:
        """Rewrite the CSV with the kept rows (a resumed run drops rows past its snapshot)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for row in self.rows:
            writer.writerow(row.cells())
        atomic_write_text(self.csv_path, buffer.getvalue())


def _tensorboard_writer(folder: Path, start_iter: int):
    """A TensorBoard SummaryWriter, or None when the ``tensorboard`` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=start_iter if start_iter else None)


def format_outputs(outputs: Dict[str, float], weights: Dict[str, float], prefix: str) -> List[str]:
    """Caffe's ``Train/Test net output #i: name = value (* w = w·value loss)`` lines."""
    lines = []
    for index, (name, value) in enumerate(outputs.items()):
        weight = weights.get(name, 0.0)
        suffix = f" (* {weight:g} = {weight * value:g} loss)" if weight else ""
        lines.append(f"    {prefix} net output #{index}: {name} = {value:g}{suffix}")
    return lines
