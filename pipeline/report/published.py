"""The paper's published numbers (Table 1 and Table 2), transcribed exactly as printed.

Values are kept as the printed text ("68.07", "32", "47" stay as they are; "-" is missing), so the
report shows them exactly as the paper does; :func:`as_float` parses one when a number is needed.
These rows are only ever shown as *published*, never mixed with measured rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TABLE1_COLUMNS: tuple[str, ...] = ("O-Duke", "O-REID", "P-REID", "Market-1501", "DukeMTMC")
"""Table 1's dataset columns, in the paper's order; each has an R@1 and an mAP sub-column."""

TABLE1_DATASETS: dict[str, str] = {
    "O-Duke": "occluded_duke", "O-REID": "occluded_reid", "P-REID": "partial_reid",
    "Market-1501": "market1501", "DukeMTMC": "dukemtmc",
}
"""Table 1 column -> the project's dataset name (O-REID and P-REID: Market-trained models)."""


@dataclass(frozen=True)
class PublishedRow:
    """One method's row of Table 1: (R@1, mAP) text per column, ``None`` where the paper has '-'."""

    method: str
    section: Literal["CNN", "transformer"]
    cells: tuple[tuple[str | None, str | None], ...]

    def cell(self, column: str) -> tuple[str | None, str | None]:
        return self.cells[TABLE1_COLUMNS.index(column)]


def _row(method: str, section: Literal["CNN", "transformer"], printed: str) -> PublishedRow:
    values = [None if v == "-" else v for v in printed.split()]
    if len(values) != 2 * len(TABLE1_COLUMNS):
        raise ValueError(f"{method}: expected 10 values, got {len(values)}")  # a typo in this file
    return PublishedRow(method, section, tuple(zip(values[0::2], values[1::2], strict=True)))


# Table 1 of the paper, row by row: O-Duke R@1 mAP | O-REID | P-REID | Market-1501 | DukeMTMC.
TABLE1: tuple[PublishedRow, ...] = (
    _row("PCB [38]", "CNN", "42.6 33.7 41.3 38.9 66.3 63.8 92.3 77.4 81.8 66.1"),
    _row("RE [63]", "CNN", "40.5 30.0 - - 54.3 54.4 - - - -"),
    _row("DSR [11]", "CNN", "40.8 30.4 72.8 62.8 73.7 68.07 - - - -"),
    _row("FD-GAN [8]", "CNN", "40.8 - - - - - - - - -"),
    _row("SFR [12]", "CNN", "42.3 32 - - 56.9 - - - - -"),
    _row("FRR [13]", "CNN", "- - 78.3 68.0 81.0 76.6 - - - -"),
    _row("PVPM [7]", "CNN", "47 37.7 70.4 61.2 - - - - - -"),
    _row("SSGR [51]", "CNN", "65.8 57.2 78.5 72.9 - - - - - -"),
    _row("LDS [54]", "CNN", "64.3 55.7 - - - - - - - -"),
    _row("BPBreID [35]", "CNN", "71.3 57.5 77.0 70.9 - - - - - -"),
    _row("SPReID [20]", "CNN", "- - - - - - 93.7 83.4 86.0 73.3"),
    _row("VPM [37]", "CNN", "- - - - - - 93.0 80.8 83.6 72.6"),
    _row("MGN [44]", "CNN", "- - - - - - 95.7 86.9 88.7 78.4"),
    _row("STNReID [28]", "CNN", "- - - - - - 93.8 84.9 - -"),
    _row("FIDI [50]", "CNN", "- - - - - - 94.5 86.8 88.1 77.5"),
    _row("CAL [31]", "CNN", "- - - - - - 94.5 87.0 87.2 76.4"),
    _row("CDNet [23]", "CNN", "- - - - - - 95.1 86.0 88.6 76.8"),
    _row("AAformer [65]", "CNN", "- - - - - - 95.4 87.7 90.1 80.0"),
    _row("PGFA [30]", "CNN", "51.4 37.3 - - 69.0 61.5 91.2 76.8 82.6 65.5"),
    _row("HOReID [43]", "CNN", "55.1 43.8 80.3 70.2 85.3 - 94.2 84.9 86.9 75.6"),
    _row("OAMN [3]", "CNN", "62.6 46.1 - - 86.0 - 93.2 79.8 86.3 72.6"),
    _row("ISP [64]", "CNN", "62.8 52.3 - - - - 95.3 88.6 89.6 80.0"),
    _row("Pirt [29]", "CNN", "60.0 50.9 - - - - 94.1 86.3 88.9 77.6"),
    _row("Vit Baseline", "transformer", "61.1 53.1 81.2 76.7 73.3 74.0 94.7 86.8 88.8 79.3"),
    _row("PAT [26]", "transformer", "64.5 53.6 81.6 72.1 88.0 - 95.4 88.0 88.8 78.2"),
    _row("TransReID [14]", "transformer", "64.2 55.7 70.2 67.3 71.3 68.6 95.0 88.2 89.6 80.6"),
    _row("FED [46]", "transformer", "68.1 56.4 86.3 79.3 83.1 80.5 95.0 86.3 89.4 78.0"),
    _row("DPM [40]", "transformer", "69.9 60.7 82.7 76.6 - - - - - -"),
    _row("DRL-Net [19]", "transformer", "- - - - - - 94.7 86.9 88.1 76.6"),
    _row("FRT [49]", "transformer", "70.7 61.3 80.4 71.0 88.2 - 95.5 88.1 90.5 81.7"),
    _row("DDRN(Ours)", "transformer", "71.3 62.4 84.7 80.7 83.3 80.6 95.8 88.4 90.8 81.7"),
)


@dataclass(frozen=True)
class AblationRow:
    """One row of Table 2 (Occluded-Duke): components on/off and the published R@1 / mAP."""

    index: int
    embedding_space: bool
    orthogonal_loss: bool
    hs_arcface: bool
    r1: str
    mAP: str


TABLE2: tuple[AblationRow, ...] = (
    AblationRow(0, False, False, False, "62.5", "55.2"),
    AblationRow(1, True, False, False, "65.7", "59.0"),
    AblationRow(2, False, False, True, "66.5", "56.6"),
    AblationRow(3, True, True, False, "67.1", "60.0"),
    AblationRow(4, True, True, True, "71.3", "62.4"),
)
"""Table 2 of the paper; ``index`` is what ``variants.<name>.table2_index`` in params.yaml names."""

TABLE2_DATASET = "occluded_duke"
"""The dataset Table 2's ablation was run on."""


def as_float(text: str | None) -> float | None:
    """A printed value as a number (``None`` for a missing one)."""
    return None if text is None else float(text)
