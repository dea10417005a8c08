"""What a decoder does with a chunk it cannot read: stop with the record's number, or (``--salvage``)
note it and go on, so that the rest of the scene is recovered and the chunk is written as nodata.

Both codec generations decode chunk by chunk; keeping the decision here keeps the message, the exit
code (through :class:`DamagedChunkError`) and the report's record numbers the same for both.
"""

from __future__ import annotations

from sarcodec.errors import ContainerError, DamagedChunkError


class ChunkDamage:
    """Damaged chunks of one band: record numbers go to the shared ``damaged`` list (the decode report),
    grid positions to ``chunks`` (``BandWriter`` marks those pixels nodata)."""

    def __init__(self, reader_name: str, band_index: int, *, salvage: bool, damaged: list[int]) -> None:
        self.reader_name, self.band_index = reader_name, band_index
        self.salvage, self.damaged = salvage, damaged
        self.chunks: set[tuple[int, int]] = set()

    def missing(self, cr: int, cc: int) -> ContainerError:
        """The error for a chunk the index does not list (a truncated or edited file)."""
        return ContainerError(f"{self.reader_name}: chunk ({self.band_index}, {cr}, {cc}) is missing")

    def handle(self, cr: int, cc: int, record, exc: ContainerError, *, kind: str | None = None,
               at: tuple[int, int] | None = None) -> None:
        """Raise :class:`DamagedChunkError` for chunk (cr, cc), or with salvage record it and return.

        ``kind`` names a side record (mask, fallback) rather than the chunk's payload; ``at`` is the
        position to mark in the source's grid when that differs from (cr, cc).
        """
        number = record.index if record is not None else -1
        if not self.salvage:
            place = f"band {self.band_index + 1}, row {cr}, col {cc}"
            where = f"record {number} ({kind} of {place})" if kind else f"chunk {number} ({place})"
            raise DamagedChunkError(f"{self.reader_name}: {where} is damaged: {exc}; "
                                    "--salvage decodes the rest and marks it nodata", number) from None
        self.damaged.append(number)
        self.chunks.add(at if at is not None else (cr, cc))
